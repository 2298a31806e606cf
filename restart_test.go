package scheduler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// openSQLite opens a SQLite store at path, closing it at cleanup.
func openSQLite(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// leaveStoredWork runs a scheduler on the SQLite file at path while service
// "a" of cfg is down: it enqueues first, waits until their delivery failed
// (so they wait in a stored transaction), enqueues then (left queued), and
// stops. cfg.Store is set to the file, and retries wait an hour.
func leaveStoredWork(t *testing.T, path string, cfg Config, first, then []Event) {
	t.Helper()
	ctx := context.Background()
	st := openSQLite(t, path)
	cfg.Store = st
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Enqueue(ctx, first...))
	waitDown(t, s, "a")
	if len(then) > 0 {
		require.NoError(t, s.Enqueue(ctx, then...))
	}
	require.NoError(t, s.Stop(ctx))
	require.NoError(t, st.Close())
}

// TestStartSendsWorkLeftByAnEarlierRunAtOnce checks that Start makes an
// attempt for every service with stored transactions or queued items, not
// when the next event comes nor when the poller looks.
func TestStartSendsWorkLeftByAnEarlierRunAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	as := astest.New(t, "tok")
	as.Down()

	cfg := testConfig(t, reg("a", as, "@a_.*"))
	leaveStoredWork(t, path, cfg, []Event{event("$stored", "!r", "@a_x")},
		[]Event{event("$queued1", "!r", "@a_x"), event("$queued2", "!r", "@a_x")})

	as.Up()
	cfg.Store = openSQLite(t, path)
	cfg.PollInterval = time.Hour // neither the poller…
	start(t, cfg)                // …nor a new Enqueue: Start alone sends it
	waitDelivered(t, as, 3)
	assert.Equal(t, []string{"$stored", "$queued1", "$queued2"}, as.Delivered())
	assertIncreasingTxnIDs(t, as)
}

// TestQueuedItemsKeepTheRoutingDecidedWhenAccepted checks that interest is
// decided once, at Enqueue, and stored: a restart with changed namespaces
// does not re-route what was accepted before it.
func TestQueuedItemsKeepTheRoutingDecidedWhenAccepted(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	asA := astest.New(t, "tokA")
	asB := astest.New(t, "tokB")
	asA.Down()

	cfg := testConfig(t, reg("a", asA, "@alice.*"), reg("b", asB, "@bob.*"))
	leaveStoredWork(t, path, cfg, []Event{event("$for-a", "!r", "@alice:example.org")},
		[]Event{event("$for-a-too", "!r", "@alice:example.org")})

	// The registrations swap their namespaces across the restart.
	asA.Up()
	cfg.Store = openSQLite(t, path)
	cfg.Services = []*Registration{reg("a", asA, "@bob.*"), reg("b", asB, "@alice.*")}
	s2 := start(t, cfg)
	waitDelivered(t, asA, 2)
	assert.Equal(t, []string{"$for-a", "$for-a-too"}, asA.Delivered())

	// New events follow the new namespaces.
	require.NoError(t, s2.Enqueue(ctx, event("$new", "!r", "@alice:example.org")))
	waitDelivered(t, asB, 1)
	assert.Equal(t, []string{"$new"}, asB.Delivered())
	assert.Equal(t, 0, asA.Deliveries("$new"))
}

// TestChangedURLAndTokenApplyToStoredTransactions checks that the URL and
// hs_token are read at send time, never stored.
func TestChangedURLAndTokenApplyToStoredTransactions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	old := astest.New(t, "old-token")
	old.Down()
	cfg := testConfig(t, reg("a", old, "@a_.*"))
	leaveStoredWork(t, path, cfg, []Event{event("$1", "!r", "@a_x")}, nil)
	firstBody := old.Requests()[0].Body

	moved := astest.New(t, "new-token")
	cfg.Store = openSQLite(t, path)
	cfg.Services = []*Registration{reg("a", moved, "@a_.*")}
	start(t, cfg)
	waitDelivered(t, moved, 1)
	r := successes(moved)[0]
	assert.Equal(t, "Bearer new-token", r.Auth)
	assert.Equal(t, old.Requests()[0].TxnID, r.TxnID, "the stored transaction keeps its ID")
	assert.Equal(t, string(firstBody), string(r.Body), "and its bytes")
}

// TestStopUnderLoadLosesNothing stops the scheduler with a short deadline
// while producers fill the pool and a transaction hangs in flight: every
// call that Enqueue accepted is delivered by the next run, and no
// goroutine is left.
func TestStopUnderLoadLosesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	as := astest.New(t, "tok")
	as.Hang()
	st := openSQLite(t, path)
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.Store = st
	cfg.MaxPoolEvents = 5000

	before := goleak.IgnoreCurrent()
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))

	var mu sync.Mutex
	var accepted []string
	var wg sync.WaitGroup
	const producers = 8
	for p := range producers {
		wg.Go(func() {
			for i := 0; ; i += 50 {
				evs := make([]Event, 50)
				for j := range evs {
					evs[j] = event(fmt.Sprintf("$p%d-%d", p, i+j), "!r", "@a_x")
				}
				err := s.Enqueue(ctx, evs...)
				if errors.Is(err, ErrStopped) {
					return
				}
				if err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				mu.Lock()
				for _, ev := range evs {
					accepted = append(accepted, ev.ID)
				}
				mu.Unlock()
			}
		})
	}
	waitArrived(t, as, 1) // a transaction is in flight and hangs
	waitFor(t, "thousands of events accepted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted) >= 3000
	})
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err = s.Stop(stopCtx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the hung PUT outlives the deadline")
	wg.Wait()
	goleak.VerifyNone(t, before)
	require.NoError(t, st.Close())

	as.Release()
	cfg.Store = openSQLite(t, path)
	start(t, cfg)
	mu.Lock()
	want := append([]string(nil), accepted...)
	mu.Unlock()
	waitFor(t, "every accepted event delivered", func() bool {
		for _, id := range want {
			if as.Deliveries(id) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("%d events accepted before Stop, all delivered after the restart", len(want))
}
