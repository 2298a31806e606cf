package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// errUnblocked is the outcome of blockWriter's call.
var errUnblocked = errors.New("unblocked")

// blockWriter makes the writer run a call that waits until the returned
// function is called, so that the calls made meanwhile queue up and are
// taken together once it returns. The blocking call fails, alone in its
// transaction: the calls queued meanwhile cannot join it.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		err := s.write(&request{ctx: context.Background(), work: func(context.Context, *sql.Tx) error {
			close(started)
			<-unblock
			return errUnblocked
		}}, nil)
		if !errors.Is(err, errUnblocked) {
			t.Errorf("blocking call: got %v, want errUnblocked", err)
		}
	})
	<-started
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(unblock)
			wg.Wait()
		})
	}
	t.Cleanup(release)
	return release
}

// waitQueued waits until n calls wait in the writer's queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.w.mu.Lock()
		defer s.w.mu.Unlock()
		return len(s.w.queue) == n
	}, 10*time.Second, time.Millisecond, "waiting for %d queued calls", n)
}

// commits returns how many SQLite transactions the writer has committed.
func commits(s *Store) int64 {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.commits
}

// calls runs each function in a goroutine of its own, one after another
// into the writer's queue, and returns a function that waits for them and
// returns their errors in order.
func calls(t *testing.T, s *Store, queuedBefore int, fns ...func() error) (wait func() []error) {
	t.Helper()
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
		waitQueued(t, s, queuedBefore+i+1) // keep the order
	}
	return func() []error {
		wg.Wait()
		return errs
	}
}

func TestWriterMergesConcurrentCallsAndEachFailsAlone(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)
	_, err = s.Claim(ctx, "held", "owner", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "one", "a")}))
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)

	release := blockWriter(t, s)
	before := commits(s)
	var formed *store.Txn
	wait := calls(t, s, 0,
		func() error { return s.Append(ctx, []store.Entry{entry("$2", "two", "a", "b")}) },
		func() error { return s.Complete(ctx, "a", e+1, txn.ID) }, // stale
		func() error { return s.Complete(ctx, "a", e, txn.ID) },
		func() error {
			_, err := s.Claim(ctx, "held", "intruder", time.Hour)
			return err
		},
		func() error {
			var err error
			formed, err = s.NextTxn(ctx, "a", e, 1, lots)
			return err
		},
		func() error { return s.Append(ctx, []store.Entry{entry("$3", "three", "b")}) },
	)
	release()
	errs := wait()
	require.Equal(t, before+1, commits(s), "one commit for all six calls")

	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], store.ErrStaleEpoch)
	require.NoError(t, errs[2])
	require.ErrorIs(t, errs[3], store.ErrLeaseHeld)
	require.NoError(t, errs[4])
	require.NoError(t, errs[5])

	// Each call saw the ones before it: the NextTxn took $2, appended
	// before it, after the Complete deleted $1.
	require.NotNil(t, formed)
	require.Len(t, formed.Items, 1)
	require.Equal(t, "two", string(formed.Items[0].Data))
	txns, err := s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	require.Len(t, txns, 1)
	require.Equal(t, formed.ID, txns[0].ID)
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Len(t, bl, 2)
	require.Equal(t, store.Backlog{Service: "b", Queued: 2, Oldest: bl[1].Oldest}, bl[1])
}

// failBetweenTwoAppends runs, in one SQLite transaction, an Append of
// "$1", a call that writes, does then, and fails, and an Append of "$2".
// It requires that the call fails with its own error, that both Appends
// succeed, and that nothing the failed call wrote is left.
func failBetweenTwoAppends(t *testing.T, s *Store, then func(ctx context.Context, tx *sql.Tx) error) {
	t.Helper()
	ctx := t.Context()
	errBoom := errors.New("boom")
	release := blockWriter(t, s)
	wait := calls(t, s, 0,
		func() error { return s.Append(ctx, []store.Entry{entry("$1", "one", "a")}) },
		func() error {
			return s.write(&request{ctx: ctx, work: func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO services (service) VALUES ('partial')`); err != nil {
					return err
				}
				if err := then(ctx, tx); err != nil {
					return err
				}
				return errBoom
			}}, nil)
		},
		func() error { return s.Append(ctx, []store.Entry{entry("$2", "two", "a")}) },
	)
	release()
	errs := wait()
	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], errBoom)
	require.NoError(t, errs[2])
	require.Equal(t, 2, count(t, s, "items"))
	require.Zero(t, count(t, s, "services WHERE service = 'partial'"), "the failed call's write must be undone")
}

// TestWriterUndoesAFailedCallAlone runs a call that writes and then fails
// between two that succeed, in one SQLite transaction.
func TestWriterUndoesAFailedCallAlone(t *testing.T) {
	s := newStore(t)
	failBetweenTwoAppends(t, s, func(context.Context, *sql.Tx) error { return nil })
}

// TestWriterRunsTheOthersAgainWhenSQLiteRollsBackTheTransaction makes a
// call end the SQLite transaction, as SQLite may on a full disk or an I/O
// error: the calls before it in the transaction, lost with it, and the
// calls after it must run again and succeed.
func TestWriterRunsTheOthersAgainWhenSQLiteRollsBackTheTransaction(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	var runs atomic.Int32
	failBetweenTwoAppends(t, s, func(ctx context.Context, tx *sql.Tx) error {
		runs.Add(1)
		_, err := tx.ExecContext(ctx, "ROLLBACK")
		return err
	})
	require.Equal(t, int32(1), runs.Load(), "the failed call must not run again")

	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)
	require.Len(t, txn.Items, 2)
	require.Equal(t, "one", string(txn.Items[0].Data), "the calls kept their order")
}

// failCommits makes every commit on the writer's connection fail while
// *fail is true.
func failCommits(t *testing.T, s *Store, fail *atomic.Bool) {
	t.Helper()
	conn, err := s.db.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Raw(func(dc any) error {
		return onCommit(dc, fail.Load) // true: the commit becomes a rollback
	}))
}

func TestWriterFailsEveryCallOfATransactionWhoseCommitFails(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "one", "a")}))
	var fail atomic.Bool
	failCommits(t, s, &fail)

	release := blockWriter(t, s)
	before := commits(s)
	wait := calls(t, s, 0,
		func() error { return s.Append(ctx, []store.Entry{entry("$2", "two", "a")}) },
		func() error {
			_, err := s.NextTxn(ctx, "a", e, 1, lots)
			return err
		},
		func() error { return s.Complete(ctx, "a", e+1, 1) }, // fails alone
		func() error {
			_, err := s.Claim(ctx, "b", "owner", time.Hour)
			return err
		},
	)
	fail.Store(true)
	release()
	errs := wait()
	fail.Store(false)
	for i, err := range errs {
		require.ErrorContains(t, err, "committing", "call %d", i)
	}
	require.Equal(t, before, commits(s))

	// Nothing of the transaction was stored, and the store goes on.
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Len(t, bl, 1)
	require.Equal(t, 0, bl[0].Txns)
	require.Equal(t, 1, bl[0].Queued)
	e2, err := s.Claim(ctx, "b", "owner", time.Hour)
	require.NoError(t, err)
	require.Equal(t, store.Epoch(1), e2, "the failed Claim granted nothing")
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)
	require.Len(t, txn.Items, 1)
}

func TestWriterCallCanceledWhileQueuedReturnsAtOnceAndChangesNothing(t *testing.T) {
	s := newStore(t)
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Append(ctx, []store.Entry{entry("$1", "one", "a")}) }()
	waitQueued(t, s, 1)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled, "the call must return while the writer is busy")
	release()
	settle(t, s)
	require.Zero(t, count(t, s, "items"))
}

func TestWriterCallCanceledOnceTakenReportsItsOutcome(t *testing.T) {
	s := newStore(t)
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	appended := make(chan error)
	go func() { appended <- s.Append(ctx, []store.Entry{entry("$1", "one", "a")}) }()
	waitQueued(t, s, 1)

	// A call queued after the Append holds their transaction open.
	started, unblock := make(chan struct{}), make(chan struct{})
	held := make(chan error)
	go func() {
		held <- s.write(&request{ctx: t.Context(), work: func(context.Context, *sql.Tx) error {
			close(started)
			<-unblock
			return nil
		}}, nil)
	}()
	waitQueued(t, s, 2)
	release()
	<-started // the Append has run, in the transaction not committed yet
	cancel()
	select {
	case err := <-appended:
		t.Fatalf("Append returned %v before its transaction committed", err)
	default:
	}
	close(unblock)
	require.NoError(t, <-held)
	require.NoError(t, <-appended, "a taken call reports its real outcome")
	require.Equal(t, 1, count(t, s, "items"))
}

func TestCloseWaitsForQueuedCalls(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	release := blockWriter(t, s)
	appended := make(chan error)
	go func() { appended <- s.Append(context.Background(), []store.Entry{entry("$1", "one", "a")}) }()
	waitQueued(t, s, 1)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	release()
	require.NoError(t, <-appended)
	require.NoError(t, <-closed)
	require.ErrorIs(t, s.Append(context.Background(), []store.Entry{entry("$2", "two", "a")}), store.ErrClosed)

	s = openStore(t, path, Options{})
	require.Equal(t, 1, count(t, s, "items"))
}

// TestTxnsSeesWhatACallCommitted checks the reader's connection: what a
// call reported as done is visible to the next read at once.
func TestTxnsSeesWhatACallCommitted(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, s.Append(ctx, []store.Entry{entry(fmt.Sprintf("$%d", i), "x", "a")}))
		txn, err := s.NextTxn(ctx, "a", e, 1, lots)
		require.NoError(t, err)
		txns, err := s.Txns(ctx, "a", 0)
		require.NoError(t, err)
		require.Len(t, txns, 1)
		require.Equal(t, txn.ID, txns[0].ID)
		require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
		txns, err = s.Txns(ctx, "a", 0)
		require.NoError(t, err)
		require.Empty(t, txns)
		bl, err := s.Backlogs(ctx)
		require.NoError(t, err)
		require.Empty(t, bl)
	}
}

func TestAppendOrderedCallsQueuedOnceLaterCallsRunAfterIt(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)

	release := blockWriter(t, s)
	before := commits(s)
	queuedAt := -1 // calls in the writer's queue when queued ran
	var formed *store.Txn
	wait := calls(t, s, 0,
		func() error {
			return s.AppendOrdered(ctx, []store.Entry{entry("$1", "one", "a")}, func() {
				s.w.mu.Lock()
				queuedAt = len(s.w.queue)
				s.w.mu.Unlock()
			})
		},
		func() error {
			var err error
			formed, err = s.NextTxn(ctx, "a", e, 1, lots)
			return err
		},
	)
	release()
	errs := wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Equal(t, 1, queuedAt, "queued runs once the Append waits in the writer's queue")
	require.NotNil(t, formed, "a call queued after the Append sees its items")
	require.Len(t, formed.Items, 1)
	require.Equal(t, before+1, commits(s), "the Append and the transaction formed from it share one commit")
}

func TestPurgeRunsInATransactionOfItsOwn(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)

	release := blockWriter(t, s)
	before := commits(s)
	wait := calls(t, s, 0,
		func() error { return s.Append(ctx, []store.Entry{entry("$1", "one", "a")}) },
		func() error { return s.Purge(ctx, "a", e) },
		func() error { return s.Append(ctx, []store.Entry{entry("$2", "two", "a")}) },
	)
	release()
	for i, err := range wait() {
		require.NoError(t, err, "call %d", i)
	}
	// The Purge's changes have no bound, so it runs in a transaction of its
	// own: no other call waits for its commit, nor runs again if it fails.
	require.Equal(t, before+3, commits(s))
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)
	require.Len(t, txn.Items, 1)
	require.Equal(t, "two", string(txn.Items[0].Data), "the calls ran in order")
}
