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

// maxCallsPerCommit caps the calls one SQLite transaction of the writer
// holds, which bounds how long the first of a long queue waits.
const maxCallsPerCommit = 256

// joinFor is how long after its BEGIN a transaction of the writer takes in
// the calls queued meanwhile: about what a commit costs, which each of
// them saves.
const joinFor = time.Millisecond

// shrinkAfter is how long the writer waits with nothing to do, after calls
// that freed pages, before it checks whether the files on disk have
// outgrown the database (a backlog drained, or traffic paused). Under load
// it never waits that long, so the log is not cut back only to regrow.
const shrinkAfter = 50 * time.Millisecond

// A request is one call of a method that changes state, waiting for the
// writer.
type request struct {
	// ctx is the caller's: once done before the writer takes the request,
	// the call fails with ctx.Err() and changes nothing. work runs under
	// the writer's context, never cancelled, so that one caller cannot
	// roll back the calls that share its transaction.
	ctx  context.Context
	work func(ctx context.Context, tx *sql.Tx) error
	// frees marks calls that may leave free pages (Complete, Purge).
	frees bool
	// alone marks a call whose changes have no bound (Purge): it runs in a
	// transaction of its own, so that no other call waits for it, nor
	// runs again if it fails.
	alone bool
	// state is requestWaiting until the writer takes the request or the
	// caller withdraws it.
	state atomic.Int32
	done  chan error // the outcome, once
}

// The states of a request.
const (
	requestWaiting int32 = iota
	requestTaken
	requestWithdrawn
)

// writer is the state of the store's writer goroutine.
type writer struct {
	mu    sync.Mutex
	queue []*request
	// idle is true while the goroutine waits with nothing queued or owed;
	// tests wait for it before they measure the file.
	idle bool
	// commits and calls count the writer's commits and the calls they
	// held, for the benchmarks.
	commits, calls int64

	kick chan struct{}    // capacity 1: a request was queued
	run  *lifecycle.Group // owns the writer goroutine; Close stops it

	// Owned by the goroutine.
	retry          []*request // taken, to run again first: see commit
	free           int64      // free pages, as of the last batch that freed some
	checkpointOwed bool       // pages were given back since the last checkpoint
	shrinkOwed     bool       // calls freed pages: see shrinkAfter
	mem            *memory    // nil once SQLite undid calls, until read again
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

// refuse marks err as the error of a call that wrote nothing; it reads and
// matches as err does.
func refuse(err error) error { return &refusal{err} }

// write hands r to the writer goroutine, calls queued (if not nil) once r
// is in the queue, whose requests run in order, and waits for r's outcome,
// which comes only after the transaction that ran it committed. When
// r.ctx ends before the writer has taken r, write returns r.ctx.Err() and
// r never runs. The caller holds the store open (enter), which checked for
// a failed sync; the writer checks again.
func (s *Store) write(r *request, queued func()) error {
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
	case <-r.ctx.Done():
		if r.state.CompareAndSwap(requestWaiting, requestWithdrawn) {
			return r.ctx.Err()
		}
		return <-r.done
	}
}

// runWriter is the writer goroutine: it runs the requests waiting in
// batches (commit) and, between them, gives free pages back to the file
// system. Close stops it once no call is in flight.
func (s *Store) runWriter() {
	w := s.w
	quiet := time.NewTimer(shrinkAfter)
	quiet.Stop()
	defer quiet.Stop()
	for {
		if batch := s.take(maxCallsPerCommit); len(batch) > 0 {
			s.commit(batch)
			if s.w.free >= 2*s.vacuumStepPages() {
				s.compactStep() // requests keep coming: bound the free pages anyway
			}
			continue
		}
		select {
		case <-w.run.Stopping():
			s.failQueued(store.ErrClosed)
			return
		default:
		}
		if s.w.free >= s.vacuumThresholdPages() || s.w.checkpointOwed { // space to give back
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
// then those queued, in order. It skips withdrawn requests and answers
// those whose context has ended.
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
	clear(w.queue[:n]) // let the requests go with their calls
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

// commit runs batch in one SQLite transaction, with the requests queued
// while it is young (joinFor), commits it, and only then tells each
// request its outcome: the commit, with its sync, is the costly part.
//
// A request that refuses wrote nothing and fails alone. Any other failure
// rolls the whole transaction back: the writer forgets its memory of the
// file (read again by begin), the request at fault fails, and the others
// run again first (when the commit failed, they all fail with its error).
// Such failures are rare (a full disk, an I/O error), so no call needs a
// savepoint, nor an undo of its memory.
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
