package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// watch runs Watch on s until t ends and returns the signals it reports.
func watch(t *testing.T, s *Store) <-chan store.Signal {
	t.Helper()
	ch := make(chan store.Signal, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.Watch(ctx, func(sig store.Signal) {
			select {
			case ch <- sig:
			default:
				t.Errorf("signal %+v dropped: the test reads too slowly", sig)
			}
		})
		if !errors.Is(err, context.Canceled) && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Watch: got error %v, want context.Canceled or ErrClosed", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	// Watch has registered once a signal can reach it; give it a moment.
	eventually(t, "Watch registered", s.watch.any)
	return ch
}

// expectSignal fails t unless want arrives on ch within d, and returns how
// long it took. Other signals before it must be in allowed.
func expectSignal(t *testing.T, ch <-chan store.Signal, want store.Signal, d time.Duration, allowed ...store.Signal) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(d)
	for {
		select {
		case sig := <-ch:
			if sig == want {
				return time.Since(start)
			}
			ok := false
			for _, a := range allowed {
				ok = ok || sig == a
			}
			if !ok {
				t.Fatalf("got signal %+v while waiting for %+v", sig, want)
			}
		case <-timeout:
			t.Fatalf("signal %+v did not arrive within %v", want, d)
		}
	}
}

// expectNone fails t if a signal arrives on ch within d.
func expectNone(t *testing.T, ch <-chan store.Signal, d time.Duration) {
	t.Helper()
	select {
	case sig := <-ch:
		t.Fatalf("got signal %+v, want none", sig)
	case <-time.After(d):
	}
}

func sigWork(service string) store.Signal {
	return store.Signal{Service: service, Kind: store.SignalWork}
}

func sigUp(service string) store.Signal {
	return store.Signal{Service: service, Kind: store.SignalServiceUp}
}

// TestWatchReportsOtherStoresWithinMilliseconds: a store's watchers hear
// of another store's Append and ServiceUp at once, and not of their own
// store's, which its caller made.
func TestWatchReportsOtherStoresWithinMilliseconds(t *testing.T) {
	schema := newSchema(t)
	s1 := openStore(t, schema, Options{})
	s2 := openStore(t, schema, Options{})
	got1, got2 := watch(t, s1), watch(t, s2)

	require.NoError(t, s2.Append(t.Context(), []store.Entry{entry("$1", "one", "a", "b")}))
	took := expectSignal(t, got1, sigWork("a"), 2*time.Second, sigWork("b"))
	t.Logf("SignalWork reached the other store in %v", took)
	require.Less(t, took, 500*time.Millisecond)

	require.NoError(t, s1.Append(t.Context(), []store.Entry{entry("$2", "two", "c")}))
	require.NoError(t, s2.ServiceUp(t.Context(), "a"))
	// Notifications arrive in commit order: had s1 reported its own
	// Append, it would come before this.
	expectSignal(t, got1, sigUp("a"), 2*time.Second, sigWork("b"))
	expectSignal(t, got2, sigWork("c"), 2*time.Second)
	expectNone(t, got2, 200*time.Millisecond) // neither its own Append nor its own ServiceUp
}

// TestWatchPollOnly: a store without a listener reports, once per poll
// interval, what other stores (listening or not) did, and they hear of
// what it did.
func TestWatchPollOnly(t *testing.T) {
	schema := newSchema(t)
	poller := openStore(t, schema, Options{PollOnly: true, PollInterval: 50 * time.Millisecond})
	listening := openStore(t, schema, Options{})
	gotPoller, gotListening := watch(t, poller), watch(t, listening)
	time.Sleep(100 * time.Millisecond) // the poller reads its first state

	require.NoError(t, listening.Append(t.Context(), []store.Entry{entry("$1", "one", "a")}))
	expectSignal(t, gotPoller, sigWork("a"), 2*time.Second)
	require.NoError(t, listening.ServiceUp(t.Context(), "a"))
	expectSignal(t, gotPoller, sigUp("a"), 2*time.Second)

	require.NoError(t, poller.Append(t.Context(), []store.Entry{entry("$2", "two", "b")}))
	expectSignal(t, gotListening, sigWork("b"), 2*time.Second)
	require.NoError(t, poller.ServiceUp(t.Context(), "b"))
	expectSignal(t, gotListening, sigUp("b"), 2*time.Second)
	expectNone(t, gotPoller, 200*time.Millisecond) // its own calls are not reported
}

// TestWatchReportsForwardedOutboxRows: rows that an application committed
// through AppendTx are reported to the watchers of every store, the
// forwarder's own included.
func TestWatchReportsForwardedOutboxRows(t *testing.T) {
	schema := newSchema(t)
	s1 := openStore(t, schema, Options{})
	s2 := openStore(t, schema, Options{})
	got1, got2 := watch(t, s1), watch(t, s2)
	conn := callerConn(t)
	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, s1.AppendTx(t.Context(), tx, []store.Entry{entry("$1", "one", "a")}))
	expectNone(t, got1, 100*time.Millisecond)
	require.NoError(t, tx.Commit(t.Context()))
	expectSignal(t, got1, sigWork("a"), 2*time.Second)
	expectSignal(t, got2, sigWork("a"), 2*time.Second)
}

// TestWatchSurvivesLostListener: when the listener's connection is
// killed, the store reconnects and reports the services with work, in
// case their notifications were lost.
func TestWatchSurvivesLostListener(t *testing.T) {
	schema := newSchema(t)
	s1 := openStore(t, schema, Options{PollInterval: 100 * time.Millisecond})
	s2 := openStore(t, schema, Options{})
	got := watch(t, s1)
	var killed int
	require.NoError(t, s2.pool.QueryRow(t.Context(),
		`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1`,
		"LISTEN "+ident(s1.channel)).Scan(&killed))
	require.Equal(t, 2, killed, "the listeners of both stores")
	require.NoError(t, s2.Append(t.Context(), []store.Entry{entry("$1", "one", "a")}))
	expectSignal(t, got, sigWork("a"), 5*time.Second)
	// Reconnected: a new Append is reported at once.
	eventually(t, "listening again", func() bool {
		var n int
		require.NoError(t, s2.pool.QueryRow(t.Context(),
			`SELECT count(*) FROM pg_stat_activity WHERE query = $1`, "LISTEN "+ident(s1.channel)).Scan(&n))
		return n == 2
	})
	require.NoError(t, s2.Append(t.Context(), []store.Entry{entry("$2", "two", "b")}))
	expectSignal(t, got, sigWork("b"), 2*time.Second, sigWork("a"))
}

func TestWatchEndsWithContextOrClose(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := s.Watch(ctx, func(store.Signal) {})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, s.Watch(t.Context(), nil), store.ErrInvalid)

	done := make(chan error, 1)
	go func() { done <- s.Watch(context.Background(), func(store.Signal) {}) }()
	eventually(t, "Watch registered", s.watch.any)
	require.NoError(t, s.Close())
	require.ErrorIs(t, <-done, store.ErrClosed)
	require.ErrorIs(t, s.Watch(t.Context(), func(store.Signal) {}), store.ErrClosed)
	require.ErrorIs(t, s.ServiceUp(t.Context(), "a"), store.ErrClosed)
}
