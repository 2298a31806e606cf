package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asdeliver/scheduler/internal/lifecycle"
	"github.com/asdeliver/scheduler/store"
)

// maxCallsPerCommit caps how many calls the writer merges into one SQLite
// transaction. Under load the calls of the pipeline arrive a few at a time
// (the committer's Append and one NextTxn or Complete per service), so the
// cap only bounds how long the first call of a very long queue waits.
const maxCallsPerCommit = 256

// joinFor is how long after its BEGIN a SQLite transaction of the writer
// takes in requests queued meanwhile. It is about what a commit costs: the
// first call of a transaction waits for at most about that much of later
// calls' work (plus the work of the last one taken), and saves them a
// commit each.
const joinFor = time.Millisecond

// shrinkAfter is how long the writer waits with nothing to do, after
// calls that freed pages, before it checks whether the files on disk
// have outgrown the database: a backlog has drained, or traffic paused.
// Under load it never waits that long, so the log is not cut back between
// commits only to grow again.
const shrinkAfter = 50 * time.Millisecond

// A request is one call of a method that changes state, waiting for the
// writer.
type request struct {
	// ctx is the caller's: once done before the writer takes the request,
	// the call fails with ctx.Err() and changes nothing. The work itself
	// runs under the writer's context, never cancelled, so that one
	// caller's context cannot interrupt a statement and roll back the
	// calls that share its SQLite transaction.
	ctx context.Context
	// work does the call's reads and writes in tx.
	work func(ctx context.Context, tx *sql.Tx) error
	// frees is true for calls that may leave free pages (Complete, Purge),
	// which the writer gives back to the file system later.
	frees bool
	// alone is true for a call whose changes have no bound (Purge): it
	// runs in a SQLite transaction of its own, so that no other call
	// waits for its commit, nor runs again if it fails.
	alone bool
	// state is requestWaiting until the writer takes the request or the
	// caller withdraws it, whichever comes first.
	state atomic.Int32
	// done receives the outcome once: after the commit, or at once for a
	// request the writer finds already withdrawn by its context.
	done chan error
}

// The states of a request.
const (
	requestWaiting int32 = iota
	requestTaken
	requestWithdrawn
)

// writer is the state of the store's writer goroutine: the queue of
// requests and what the goroutine keeps between batches.
type writer struct {
	mu    sync.Mutex
	queue []*request
	// idle is true while the goroutine waits with no request queued and no
	// compaction owed. Tests wait for it before they measure the file.
	idle bool
	// commits and calls count the SQLite transactions the writer committed
	// for requests and the calls they held, for the benchmarks.
	commits, calls int64

	kick chan struct{}    // capacity 1: a request was queued
	run  *lifecycle.Group // owns the writer goroutine; Close stops it

	// Owned by the goroutine.
	retry          []*request // taken, to run again first: see commit
	free           int64      // free pages, as of the last batch that freed some
	checkpointOwed bool       // pages were given back since the last checkpoint
	// shrinkOwed is true once calls that free pages have run: once the
	// writer has had nothing to do for shrinkAfter, it cuts the log back
	// (checkpointIfShrunk), which the vacuum steps alone do not when too
	// few pages were freed to start one.
	shrinkOwed bool
	// mem is what the writer keeps of the file (see memory); nil once
	// SQLite has undone calls that changed it, until commit reads it
	// again.
	mem *memory
}

func newWriter() *writer {
	return &writer{
		kick: make(chan struct{}, 1),
		run:  lifecycle.New(context.Background()),
	}
}

// refusal is the error of a call that wrote nothing: the calls sharing its
// SQLite transaction stand. Any other error of a call's work may come
// after some of its writes, and undoes the transaction.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refuse marks err as the error of a call that wrote nothing. The caller
// learns err as it is: a refusal reads and matches as err does.
func refuse(err error) error { return &refusal{err} }

// write hands work to the writer goroutine and waits for its outcome: it
// runs in a SQLite transaction that may hold other calls' work too, and
// its outcome is reported only after that transaction committed. work
// either refuses (refuse) before it writes anything or fails the
// transaction: see commit. When ctx ends before the writer has taken it,
// write returns ctx.Err() and work never runs; once taken, the call
// reports its real outcome. The caller holds the store open (enter).
func (s *Store) write(ctx context.Context, frees bool, work func(ctx context.Context, tx *sql.Tx) error) error {
	return s.enqueue(ctx, &request{ctx: ctx, work: work, frees: frees}, nil)
}

// writeAlone is write for a call whose changes have no bound: see
// request.alone.
func (s *Store) writeAlone(ctx context.Context, work func(ctx context.Context, tx *sql.Tx) error) error {
	return s.enqueue(ctx, &request{ctx: ctx, work: work, frees: true, alone: true}, nil)
}

// writeThen is write that calls queued, if not nil, once the request is in
// the writer's queue: a request queued later runs after it.
func (s *Store) writeThen(ctx context.Context, frees bool, work func(ctx context.Context, tx *sql.Tx) error, queued func()) error {
	return s.enqueue(ctx, &request{ctx: ctx, work: work, frees: frees}, queued)
}

// enqueue queues r for the writer, calls queued if not nil, and waits for
// r's outcome. A failed sync is not checked here: enter did just before,
// and the writer checks again before it runs anything.
func (s *Store) enqueue(ctx context.Context, r *request, queued func()) error {
	r.done = make(chan error, 1)
	w := s.w
	w.mu.Lock()
	w.queue = append(w.queue, r)
	w.idle = false
	w.mu.Unlock()
	if queued != nil {
		queued()
	}
	lifecycle.Poke(w.kick)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(requestWaiting, requestWithdrawn) {
			return ctx.Err()
		}
		return <-r.done
	}
}

// runWriter is the writer goroutine: it merges every request waiting into
// one SQLite transaction, commits it, and between batches, when no request
// waits, gives free pages back to the file system. It ends when Close
// stops w.run; Close first waits for every call in flight, so the queue
// then holds only withdrawn requests.
func (s *Store) runWriter() {
	w := s.w
	quiet := time.NewTimer(shrinkAfter)
	quiet.Stop()
	defer quiet.Stop()
	for {
		if batch := s.take(maxCallsPerCommit); len(batch) > 0 {
			s.commit(batch)
			if s.w.free >= s.forcedVacuumPages() {
				// Requests keep coming: give a step back anyway, so that
				// the free pages stay bounded.
				s.compactStep()
			}
			continue
		}
		select {
		case <-w.run.Stopping():
			s.failQueued(store.ErrClosed)
			return
		default:
		}
		if s.compactionOwed() {
			s.compactStep()
			continue
		}
		if w.shrinkOwed {
			quiet.Reset(shrinkAfter)
			select {
			case <-w.kick:
				quiet.Stop()
			case <-w.run.Stopping():
			case <-quiet.C:
				w.shrinkOwed = false
				_ = s.checkpointIfShrunk(context.Background())
			}
			continue
		}
		w.mu.Lock()
		w.idle = len(w.queue) == 0
		w.mu.Unlock()
		select {
		case <-w.kick:
		case <-w.run.Stopping():
		}
	}
}

// take returns up to limit requests to run: first those to run again,
// then waiting requests removed from the queue in the order they were
// queued and marked taken. It drops the requests their callers withdrew,
// and answers those whose context ended in the meantime without running
// them.
func (s *Store) take(limit int) []*request {
	w := s.w
	n := min(limit, len(w.retry))
	batch := w.retry[:n:n]
	w.retry = w.retry[n:]
	if len(w.retry) == 0 {
		w.retry = nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n = 0
	for n < len(w.queue) && len(batch) < limit {
		r := w.queue[n]
		n++
		if !r.state.CompareAndSwap(requestWaiting, requestTaken) {
			continue // withdrawn
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		batch = append(batch, r)
	}
	// Clear the taken slots, so that the requests do not outlive their
	// calls in the queue's backing array.
	clear(w.queue[:n])
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	return batch
}

// failQueued answers every request still queued with err.
func (s *Store) failQueued(err error) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.queue {
		if r.state.CompareAndSwap(requestWaiting, requestTaken) {
			r.done <- err
		}
	}
	w.queue = nil
}

// commit runs batch in one SQLite transaction, then commits it, and only
// then tells each request its outcome. While the transaction is young
// (joinFor), requests queued in the meantime join it before the commit:
// the commit, with its sync, is the costly part, and the pipeline's calls
// often arrive a few microseconds apart.
//
// A request that refuses wrote nothing and fails alone. Any other failure
// of a request, or of the commit, has one answer: SQLite rolls the whole
// transaction back, the writer forgets its memory of the file (read again
// before the next transaction), the request at fault fails, and the
// others run again first in the next transaction (when the commit failed,
// they all fail with its error). Such failures are rare: a full disk, an
// I/O error. So no call needs a savepoint, nor an undo of its memory.
func (s *Store) commit(batch []*request) {
	if err := s.syncFailed(); err != nil {
		// Nothing committed from now on could be acknowledged.
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	ctx := context.Background()
	var (
		tx    *sql.Tx
		begun time.Time
		held  []*request // run in tx: they learn their outcome at the commit
		errs  []error    // their outcomes
		freed bool       // one of them may have left free pages
	)
	for i := 0; ; i++ {
		if i == len(batch) {
			if tx == nil || len(batch) >= maxCallsPerCommit || time.Since(begun) >= joinFor {
				break
			}
			more := s.take(maxCallsPerCommit - len(batch))
			if len(more) == 0 {
				break
			}
			batch = append(batch, more...)
		}
		r := batch[i]
		if r.alone && len(held) > 0 {
			// Commit what is held; r and the rest run next.
			s.w.retry = append(batch[i:len(batch):len(batch)], s.w.retry...)
			break
		}
		if tx == nil {
			if err := s.begin(ctx, &tx); err != nil {
				for _, r := range batch[i:] {
					r.done <- err
				}
				return
			}
			begun = time.Now()
		}
		err := r.work(ctx, tx)
		var refused *refusal
		if err != nil && !errors.As(err, &refused) {
			_ = tx.Rollback()
			s.w.mem = nil
			r.done <- fullErr(err)
			s.w.retry = append(append(held[:len(held):len(held)], batch[i+1:]...), s.w.retry...)
			return
		}
		held, errs = append(held, r), append(errs, fullErr(err))
		freed = freed || (err == nil && r.frees)
		if r.alone {
			s.w.retry = append(batch[i+1:len(batch):len(batch)], s.w.retry...)
			break
		}
	}
	if freed {
		s.w.shrinkOwed = true
		// Read inside the transaction: the header page is in the cache.
		if err := tx.StmtContext(ctx, s.st.freelistCount).QueryRowContext(ctx).Scan(&s.w.free); err != nil {
			s.w.free = 0 // read again after the next Complete
		}
	}
	if err := tx.Commit(); err != nil {
		s.w.mem = nil
		err = fullErr(fmt.Errorf("committing: %w", err))
		for _, r := range held {
			r.done <- err
		}
		return
	}
	s.ckpt.committed()
	s.w.mu.Lock()
	s.w.commits++
	s.w.calls += int64(len(held))
	s.w.mu.Unlock()
	if s.sync != nil {
		s.sync.after(held, errs)
		return
	}
	for i, r := range held {
		r.done <- errs[i]
	}
}

// begin starts the writer's SQLite transaction in *tx, and reads its
// memory of the file again if it has none.
func (s *Store) begin(ctx context.Context, tx **sql.Tx) error {
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fullErr(fmt.Errorf("beginning a transaction: %w", err))
	}
	if s.w.mem == nil {
		if s.w.mem, err = loadMemory(ctx, t, s.keySeed); err != nil {
			_ = t.Rollback()
			return fmt.Errorf("reading the store's state: %w", err)
		}
	}
	*tx = t
	return nil
}
