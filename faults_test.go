package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// Storage faults: the disk fills up or the file turns read-only. Enqueue
// must then fail (never report a false success), the scheduler must keep
// running without losing what it had accepted, and once the fault clears,
// delivery must resume on its own.

// The errors the fault store injects: SQLite's text for a file that turned
// read-only (SQLITE_READONLY), and a generic I/O failure.
var (
	errFaultReadOnly = errors.New("attempt to write a readonly database")
	errFaultIO       = errors.New("disk I/O error")
)

// faultPoll is the PollInterval of these tests: the pause of a service
// after a Store error.
const faultPoll = 20 * time.Millisecond

// faultMode is a fault injected into one Store method.
type faultMode struct {
	err error
	// after makes the method run first and fail afterwards: the change is
	// made but the caller cannot know it (a commit whose answer was lost).
	after bool
}

// faultStore wraps a Store and fails the methods that have a fault set.
type faultStore struct {
	store.Store

	mu     sync.Mutex
	faults map[string]faultMode
	failed map[string][]time.Time // when each method failed, by name
}

func newFaultStore(inner store.Store) *faultStore {
	return &faultStore{Store: inner, faults: map[string]faultMode{}, failed: map[string][]time.Time{}}
}

// set injects err into the methods (Append, Claim, NextTxn, Txns, Complete,
// Backlogs), failing before they run.
func (f *faultStore) set(err error, methods ...string) { f.setMode(faultMode{err: err}, methods...) }

func (f *faultStore) setMode(m faultMode, methods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, name := range methods {
		f.faults[name] = m
	}
}

// clear removes the faults of methods, or every fault if none is named.
func (f *faultStore) clear(methods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(methods) == 0 {
		clear(f.faults)
	}
	for _, name := range methods {
		delete(f.faults, name)
	}
}

// failures returns when method failed, oldest first.
func (f *faultStore) failures(method string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.failed[method]...)
}

// before returns the error method must fail with without running, if any.
func (f *faultStore) before(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.faults[method]
	if !ok || m.after {
		return nil
	}
	f.failed[method] = append(f.failed[method], time.Now())
	return fmt.Errorf("injected fault in %s: %w", method, m.err)
}

// afterRun returns the error method must fail with although it ran and
// succeeded (err == nil), if any; otherwise err.
func (f *faultStore) afterRun(method string, err error) error {
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.faults[method]
	if !ok || !m.after {
		return nil
	}
	f.failed[method] = append(f.failed[method], time.Now())
	return fmt.Errorf("injected fault in %s after it ran: %w", method, m.err)
}

func (f *faultStore) Append(ctx context.Context, entries []store.Entry) error {
	if err := f.before("Append"); err != nil {
		return err
	}
	return f.afterRun("Append", f.Store.Append(ctx, entries))
}

func (f *faultStore) Claim(ctx context.Context, service, owner string, ttl time.Duration) (store.Epoch, error) {
	if err := f.before("Claim"); err != nil {
		return 0, err
	}
	return f.Store.Claim(ctx, service, owner, ttl)
}

func (f *faultStore) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	if err := f.before("NextTxn"); err != nil {
		return nil, err
	}
	txn, err := f.Store.NextTxn(ctx, service, epoch, format, lim)
	if err := f.afterRun("NextTxn", err); err != nil {
		return nil, err
	}
	return txn, nil
}

func (f *faultStore) Txns(ctx context.Context, service string, limit int) ([]store.Txn, error) {
	if err := f.before("Txns"); err != nil {
		return nil, err
	}
	return f.Store.Txns(ctx, service, limit)
}

func (f *faultStore) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	if err := f.before("Complete"); err != nil {
		return err
	}
	return f.afterRun("Complete", f.Store.Complete(ctx, service, epoch, id))
}

func (f *faultStore) Backlogs(ctx context.Context) ([]store.Backlog, error) {
	if err := f.before("Backlogs"); err != nil {
		return nil, err
	}
	return f.Store.Backlogs(ctx)
}

// faultSetup starts a scheduler for one service "a" on a fault store over
// a memory store, with a short PollInterval.
func faultSetup(t *testing.T) (*Scheduler, *faultStore, *astest.Server) {
	t.Helper()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	fs := newFaultStore(cfg.Store)
	cfg.Store = fs
	cfg.PollInterval = faultPoll
	return start(t, cfg), fs, as
}

// faultEvents returns n events for service a named $<prefix>-<i>.
func faultEvents(prefix string, n int) []Event { return faultEventsFrom("@a_x", prefix, n) }

// faultEventsFrom returns n events sent by sender, named $<prefix>-<i>.
func faultEventsFrom(sender, prefix string, n int) []Event {
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = event(fmt.Sprintf("$%s-%d", prefix, i), "!r", sender)
	}
	return evs
}

// faultIDs returns the IDs of events.
func faultIDs(events ...[]Event) []string {
	var ids []string
	for _, evs := range events {
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

// faultEnqueue enqueues events in calls of batch events, requiring each
// call to succeed.
func faultEnqueue(t *testing.T, s *Scheduler, events []Event, batch int) {
	t.Helper()
	for len(events) > 0 {
		n := min(batch, len(events))
		require.NoError(t, s.Enqueue(context.Background(), events[:n]...))
		events = events[n:]
	}
}

// faultWaitRetries waits until method has failed n times, then checks that
// the scheduler paced its retries by PollInterval rather than spinning.
func faultWaitRetries(t *testing.T, fs *faultStore, method string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d failed calls of %s", n, method), func() bool { return len(fs.failures(method)) >= n })
	at := fs.failures(method)
	for i := 1; i < n; i++ {
		require.GreaterOrEqual(t, at[i].Sub(at[i-1]), faultPoll, "%s retried %d after %v: the service must pause PollInterval after a Store error", method, i, at[i].Sub(at[i-1]))
	}
}

// faultCheckDelivery checks what as received: every ID of want, first
// delivered in that order and nothing else; a txn ID always with the same
// body (the fake AS checks that itself); successful txn IDs never going
// down, a repeated ID only straight after itself. It returns the number of
// repeated deliveries.
func faultCheckDelivery(t *testing.T, as *astest.Server, want []string) int {
	t.Helper()
	waitDelivered(t, as, len(want))
	require.Equal(t, want, as.Delivered(), "every accepted event, first delivered in enqueue order")
	var last int64
	repeats := 0
	seen := map[int64]bool{}
	for _, r := range successes(as) {
		id, err := strconv.ParseInt(r.TxnID, 10, 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, id, last, "txn %d delivered after txn %d", id, last)
		if seen[id] {
			require.Equal(t, last, id, "txn %d repeated after a newer one", id)
			repeats++
		}
		seen[id] = true
		last = id
	}
	return repeats
}

// TestFaultDiskFullFailsEnqueueUntilDeliveriesFreeSpace fills a SQLite
// store capped by Options.MaxSize while its application service is down:
// Enqueue fails with ErrFull, for every service, and stores nothing of the
// failing call. When the service comes back, the backlog drains, which
// frees the space, and the caller's retry of the refused events succeeds,
// with no restart and no operator.
func TestFaultDiskFullFailsEnqueueUntilDeliveriesFreeSpace(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.OpenWithOptions(filepath.Join(t.TempDir(), "asdeliver.db"),
		sqlite.Options{MaxSize: sqlite.MinMaxSize, Synchronous: sqlite.SynchronousNormal})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	asA, asB := astest.New(t, "tok-a"), astest.New(t, "tok-b")
	cfg := testConfig(t, reg("a", asA, "@a_.*"), reg("b", asB, "@b_.*"))
	cfg.Store = st
	cfg.PollInterval = faultPoll
	s := start(t, cfg)

	early := faultEvents("early", 20)
	faultEnqueue(t, s, early, 10)
	waitDelivered(t, asA, len(early))

	// a goes down; its backlog fills the store.
	asA.Down()
	var accepted, refused []Event
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "Enqueue never failed")
		batch := faultEvents(fmt.Sprintf("full%d", i), 50)
		err := s.Enqueue(ctx, batch...)
		if err != nil {
			require.ErrorIs(t, err, sqlite.ErrFull)
			refused = batch
			break
		}
		accepted = append(accepted, batch...)
	}
	require.NotEmpty(t, accepted)
	t.Logf("%d events accepted before the 1 MiB store was full", len(accepted))

	// Full: the other service's events (as many, of the same size) are
	// refused too, the scheduler runs on and reports, and nothing of the
	// refused calls was stored.
	forB := faultEventsFrom("@b_x", "bfull", len(refused))
	require.ErrorIs(t, s.Enqueue(ctx, forB...), sqlite.ErrFull)
	waitDown(t, s, "a")
	waitFor(t, "the early events recorded as delivered", func() bool {
		st, err := s.Status(ctx, "a")
		require.NoError(t, err)
		return st.Delivered == int64(len(early))
	})
	require.Equal(t, len(accepted), faultPending(t, st, "a"), "exactly the accepted events are pending")
	require.Zero(t, faultPending(t, st, "b"))

	// a comes back: the backlog drains, which makes room, and the caller's
	// retry of the refused call succeeds.
	asA.Up()
	s.ServiceUp("a")
	// Room comes back as the backlog drains, not all at once: each caller
	// retries on ErrFull until its call fits.
	enqueueWhenRoom := func(what string, evs []Event) {
		waitFor(t, what, func() bool {
			if err := s.Enqueue(ctx, evs...); err != nil {
				require.ErrorIs(t, err, sqlite.ErrFull)
				time.Sleep(faultPoll)
				return false
			}
			return true
		})
	}
	enqueueWhenRoom("the refused call to be accepted", refused)
	enqueueWhenRoom("the other service's call to be accepted", forB)
	faultCheckDelivery(t, asA, faultIDs(early, accepted, refused))
	faultCheckDelivery(t, asB, faultIDs(forB))
}

// faultPending returns how many events the SQLite store holds for service:
// queued or in stored transactions.
func faultPending(t *testing.T, st store.Store, service string) int {
	t.Helper()
	txns, err := st.Txns(context.Background(), service, 0)
	require.NoError(t, err)
	b, err := backlogOf(context.Background(), st, service)
	require.NoError(t, err)
	n := b.Queued
	for _, txn := range txns {
		n += len(txn.Items)
	}
	return n
}

// TestFaultAppendFailsEnqueueAndLosesNothing makes Append fail, as on a
// file that turned read-only or a failing disk: Enqueue returns the error,
// events accepted before are delivered all the same, and once the fault
// clears the refused events are accepted and delivered, in order.
func TestFaultAppendFailsEnqueueAndLosesNothing(t *testing.T) {
	for _, fault := range []error{errFaultReadOnly, errFaultIO} {
		t.Run(fault.Error(), func(t *testing.T) {
			ctx := context.Background()
			s, fs, as := faultSetup(t)
			before := faultEvents("before", 10)
			faultEnqueue(t, s, before, 5)
			waitDelivered(t, as, len(before))

			// Accepted while the AS is down: pending when the fault starts.
			as.Down()
			pending := faultEvents("pending", 10)
			faultEnqueue(t, s, pending, 5)
			waitDown(t, s, "a")

			fs.set(fault, "Append")
			refused := faultEvents("refused", 10)
			for range 3 {
				err := s.Enqueue(ctx, refused...)
				require.ErrorIs(t, err, fault)
				require.ErrorContains(t, err, "error storing events")
			}
			// The pending events leave while Append still fails.
			as.Up()
			s.ServiceUp("a")
			waitDelivered(t, as, len(before)+len(pending))

			fs.clear()
			faultEnqueue(t, s, refused, 5)
			faultCheckDelivery(t, as, faultIDs(before, pending, refused))
		})
	}
}

// TestFaultAppendFailingAfterItsCommitIsSafeToRetry: Append stored the
// events but its caller got an error (the answer to the commit was lost).
// Enqueue reports the error; the caller's retry of the same call does not
// queue the events a second time, since they are still pending.
func TestFaultAppendFailingAfterItsCommitIsSafeToRetry(t *testing.T) {
	ctx := context.Background()
	s, fs, as := faultSetup(t)
	as.Down()
	first := faultEvents("first", 5)
	faultEnqueue(t, s, first, 5)

	fs.setMode(faultMode{err: errFaultIO, after: true}, "Append")
	unsure := faultEvents("unsure", 5)
	require.ErrorIs(t, s.Enqueue(ctx, unsure...), errFaultIO)
	fs.clear()
	require.NoError(t, s.Enqueue(ctx, unsure...), "the caller retries the call")

	as.Up()
	s.ServiceUp("a")
	faultCheckDelivery(t, as, faultIDs(first, unsure))
	for _, id := range faultIDs(unsure) {
		assert.Equal(t, 1, as.Deliveries(id), "%s delivered once", id)
	}
}

// TestFaultNextTxnFailingPausesDeliveryUntilItClears: while transactions
// cannot be formed, events are still accepted, the service retries every
// PollInterval, and when the fault clears everything is delivered in order.
func TestFaultNextTxnFailingPausesDeliveryUntilItClears(t *testing.T) {
	s, fs, as := faultSetup(t)
	before := faultEvents("before", 5)
	faultEnqueue(t, s, before, 5)
	waitDelivered(t, as, len(before))

	fs.set(errFaultIO, "NextTxn")
	during := faultEvents("during", 40)
	faultEnqueue(t, s, during, 4)
	faultWaitRetries(t, fs, "NextTxn", 6)
	require.Len(t, as.Delivered(), len(before), "no transaction can be formed")
	st, err := s.Status(context.Background(), "a")
	require.NoError(t, err)
	require.Equal(t, len(during), st.QueuedEvents)

	fs.clear()
	faultCheckDelivery(t, as, faultIDs(before, during))
	assertIncreasingTxnIDs(t, as)
}

// TestFaultNextTxnFailingAfterItsCommitStrandsNothing: NextTxn formed and
// stored a transaction but the scheduler got an error. The transaction must
// be found and sent before any newer one, not left stored behind them.
func TestFaultNextTxnFailingAfterItsCommitStrandsNothing(t *testing.T) {
	s, fs, as := faultSetup(t)
	fs.setMode(faultMode{err: errFaultIO, after: true}, "NextTxn")
	events := faultEvents("e", 30)
	faultEnqueue(t, s, events, 3)
	faultWaitRetries(t, fs, "NextTxn", 3)
	fs.clear()
	faultCheckDelivery(t, as, faultIDs(events))
	assertIncreasingTxnIDs(t, as)
	faultCheckDrained(t, s, "a")
}

// faultCheckDrained waits until the store holds nothing for service: no
// transaction is left behind.
func faultCheckDrained(t *testing.T, s *Scheduler, service string) {
	t.Helper()
	waitFor(t, "nothing stored for "+service, func() bool {
		st, err := s.Status(context.Background(), service)
		require.NoError(t, err)
		return st.StoredTxns == 0 && st.QueuedEvents == 0
	})
}

// TestFaultCompleteFailingResendsTheSameTransaction: the AS accepted a
// transaction but the Store could not record it. The scheduler must send it
// again, same ID and same bytes, before anything newer: a duplicate, which
// the AS API allows, rather than a loss or a reordering.
func TestFaultCompleteFailingResendsTheSameTransaction(t *testing.T) {
	s, fs, as := faultSetup(t)
	fs.set(errFaultReadOnly, "Complete")
	events := faultEvents("e", 30)
	faultEnqueue(t, s, events, 3)
	faultWaitRetries(t, fs, "Complete", 4)
	fs.clear()

	faultCheckDelivery(t, as, faultIDs(events))
	reqs := successes(as)
	require.GreaterOrEqual(t, len(reqs), 4)
	for _, r := range reqs[1:4] {
		assert.Equal(t, reqs[0].TxnID, r.TxnID, "the unrecorded transaction is resent under its ID")
		assert.Equal(t, string(reqs[0].Body), string(r.Body), "byte for byte")
	}
	assert.GreaterOrEqual(t, faultCheckDelivery(t, as, faultIDs(events)), 3, "at least one resend per failed Complete but the last")
	faultCheckDrained(t, s, "a")
}

// TestFaultCompleteFailingDuringCatchUpResendsBeforeTheNextOne: while an
// AS catches up, each transaction's Complete runs beside the formation of
// the next one. A Complete that fails leaves the delivered transaction
// stored, and the one formed beside it after it: the delivered one is
// resent first, under its ID and bytes, and IDs never go down.
func TestFaultCompleteFailingDuringCatchUpResendsBeforeTheNextOne(t *testing.T) {
	s, fs, as := faultSetup(t)
	as.Down()
	events := faultEvents("e", 600)
	faultEnqueue(t, s, events, 50)
	waitDown(t, s, "a")
	// The AS's third answer in catch-up, past the stored transactions,
	// makes the next Completes fail.
	var answered atomic.Int32
	as.Respond(func(astest.Request) astest.Answer {
		if answered.Add(1) == 3 {
			fs.set(errFaultIO, "Complete")
		}
		return astest.Answer{}
	})
	s.ServiceUp("a")
	faultWaitRetries(t, fs, "Complete", 2)
	fs.clear()

	faultCheckDelivery(t, as, faultIDs(events))
	reqs := successes(as)
	require.Equal(t, reqs[2].TxnID, reqs[3].TxnID, "the transaction whose Complete failed is resent first")
	require.Equal(t, string(reqs[2].Body), string(reqs[3].Body), "byte for byte")
	var last int64
	for _, r := range reqs {
		id, err := strconv.ParseInt(r.TxnID, 10, 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, id, last, "an ID is never sent after a newer one")
		last = id
	}
	faultCheckDrained(t, s, "a")
}

// TestFaultCompleteFailingAfterItsCommit: the transaction was recorded as
// delivered but the scheduler got an error. Nothing is resent and nothing
// is left behind.
func TestFaultCompleteFailingAfterItsCommit(t *testing.T) {
	s, fs, as := faultSetup(t)
	fs.setMode(faultMode{err: errFaultIO, after: true}, "Complete")
	events := faultEvents("e", 6)
	for i := range 3 {
		faultEnqueue(t, s, events[2*i:2*i+2], 2)
		waitFor(t, "a failed Complete", func() bool { return len(fs.failures("Complete")) > i })
	}
	fs.clear()
	require.Zero(t, faultCheckDelivery(t, as, faultIDs(events)), "a recorded transaction is not resent")
	faultCheckDrained(t, s, "a")
}

// TestFaultTxnsFailingPausesRecoveryUntilItClears: the Recoverer cannot
// read the stored transaction it must resend; it retries, and resends it
// once the fault clears.
func TestFaultTxnsFailingPausesRecoveryUntilItClears(t *testing.T) {
	s, fs, as := faultSetup(t)
	as.Down()
	events := faultEvents("e", 20)
	faultEnqueue(t, s, events, 5)
	waitDown(t, s, "a")
	fs.set(errFaultIO, "Txns")
	as.Up()
	s.ServiceUp("a")
	faultWaitRetries(t, fs, "Txns", 5)
	require.Empty(t, as.Delivered(), "the stored transaction comes first, and cannot be read")

	fs.clear()
	faultCheckDelivery(t, as, faultIDs(events))
	assertIncreasingTxnIDs(t, as)
}

// TestFaultClaimFailingDelaysDeliveryUntilItClears: the lease cannot be
// taken at Start; events are still accepted and leave once it can.
func TestFaultClaimFailingDelaysDeliveryUntilItClears(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	fs := newFaultStore(cfg.Store)
	fs.set(errFaultReadOnly, "Claim")
	cfg.Store = fs
	cfg.PollInterval = faultPoll
	s := start(t, cfg)

	events := faultEvents("e", 20)
	faultEnqueue(t, s, events, 5)
	faultWaitRetries(t, fs, "Claim", 5)
	require.Empty(t, as.Delivered())
	fs.clear()
	faultCheckDelivery(t, as, faultIDs(events))
}

// TestFaultBacklogsFailing: Start checks the Store and fails while it
// cannot read it, and can be called again; once running, the poller's
// failures do not hold up delivery of what is enqueued in-process.
func TestFaultBacklogsFailing(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	fs := newFaultStore(cfg.Store)
	fs.set(errFaultIO, "Backlogs")
	cfg.Store = fs
	cfg.PollInterval = faultPoll
	s, err := New(cfg)
	require.NoError(t, err)
	require.ErrorIs(t, s.Start(ctx), errFaultIO)
	require.ErrorIs(t, s.Enqueue(ctx, event("$x", "!r", "@a_x")), ErrNotStarted)

	fs.clear()
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { require.NoError(t, s.Stop(ctx)) })
	fs.set(errFaultIO, "Backlogs")
	events := faultEvents("e", 20)
	faultEnqueue(t, s, events, 5)
	faultCheckDelivery(t, as, faultIDs(events))
	// The poller's ticker, not a pause after an error, paces these calls.
	waitFor(t, "the poller to fail 3 times", func() bool { return len(fs.failures("Backlogs")) >= 3 })
	_, err = s.Status(ctx, "a")
	require.ErrorIs(t, err, errFaultIO)
	fs.clear()
}

// TestFaultChaosLosesNothing toggles faults on every Store method at
// random while producers enqueue and the AS flaps. Every accepted event is
// delivered in enqueue order, no refused one is, and a txn ID always
// carries the same body.
func TestFaultChaosLosesNothing(t *testing.T) {
	ctx := context.Background()
	s, fs, as := faultSetup(t)
	rng := rand.New(rand.NewPCG(3, 5))
	var rngMu sync.Mutex
	methods := []string{"Append", "Claim", "NextTxn", "Txns", "Complete", "Backlogs"}
	as.FailWith(func(int) int {
		rngMu.Lock()
		defer rngMu.Unlock()
		if rng.IntN(4) == 0 {
			return http.StatusBadGateway
		}
		return 0
	})

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			rngMu.Lock()
			m := methods[rng.IntN(len(methods))]
			on := rng.IntN(3) == 0
			// A failure after the call ran: only where the outcome matters.
			after := (m == "NextTxn" || m == "Complete") && rng.IntN(2) == 0
			errs := []error{errFaultReadOnly, errFaultIO}
			e := errs[rng.IntN(2)]
			rngMu.Unlock()
			if on {
				fs.setMode(faultMode{err: e, after: after}, m)
			} else {
				fs.clear(m)
			}
		}
	})

	var accepted []string
	refused := 0
	for i := range 400 {
		batch := faultEvents(fmt.Sprintf("c%d", i), 1+i%4)
		if err := s.Enqueue(ctx, batch...); err != nil {
			require.True(t, errors.Is(err, errFaultReadOnly) || errors.Is(err, errFaultIO), "%v", err)
			refused++
			continue
		}
		accepted = append(accepted, faultIDs(batch)...)
		time.Sleep(time.Millisecond)
	}
	close(done)
	wg.Wait()
	fs.clear()
	as.Up()
	s.ServiceUp("a")
	t.Logf("%d events accepted, %d calls refused; injected failures: Append %d, Claim %d, NextTxn %d, Txns %d, Complete %d, Backlogs %d",
		len(accepted), refused, len(fs.failures("Append")), len(fs.failures("Claim")), len(fs.failures("NextTxn")),
		len(fs.failures("Txns")), len(fs.failures("Complete")), len(fs.failures("Backlogs")))
	require.Positive(t, refused)
	require.Positive(t, len(fs.failures("NextTxn"))+len(fs.failures("Txns"))+len(fs.failures("Complete")), "no delivery fault was injected")
	repeats := faultCheckDelivery(t, as, accepted)
	t.Logf("%d transactions resent after they had been delivered", repeats)
	faultCheckDrained(t, s, "a")
}

// TestFaultQueueCapKeepsHealthyServicesFlowing: with
// Config.MaxQueuedPerService, a service that stays down cannot fill a
// capped store. Its queue stops at the cap, what it misses is counted in
// Status.Dropped (every item it wanted is delivered, pending or counted
// there), and every Enqueue call succeeds, so the healthy service gets
// every event, also the ones both wanted. Without the cap the same run
// fills the store (TestFaultDiskFullFailsEnqueueUntilDeliveriesFreeSpace).
func TestFaultQueueCapKeepsHealthyServicesFlowing(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.OpenWithOptions(filepath.Join(t.TempDir(), "asdeliver.db"),
		sqlite.Options{MaxSize: sqlite.MinMaxSize, Synchronous: sqlite.SynchronousNormal})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	asA, asB := astest.New(t, "tok-a"), astest.New(t, "tok-b")
	cfg := testConfig(t, reg("a", asA, "@a_.*"), reg("b", asB, "@b_.*", "@a_shared.*"))
	cfg.Store = st
	cfg.PollInterval = faultPoll
	cfg.MaxQueuedPerService = 1000
	s := start(t, cfg)

	asA.Down()
	var forA, forB []string
	for i := range 200 { // 6,000 events for a: more than the 1 MiB store holds
		batch := slices.Concat(faultEventsFrom("@a_x", fmt.Sprintf("a%d", i), 20),
			faultEventsFrom("@a_shared", fmt.Sprintf("ab%d", i), 10),
			faultEventsFrom("@b_x", fmt.Sprintf("b%d", i), 20))
		require.NoError(t, s.Enqueue(ctx, batch...), "call %d", i)
		forA = append(forA, faultIDs(batch[:30])...)
		forB = append(forB, faultIDs(batch[20:])...)
	}
	faultCheckDelivery(t, asB, forB)

	waitDown(t, s, "a")
	status, err := s.Status(ctx, "a")
	require.NoError(t, err)
	pending := faultPending(t, st, "a")
	t.Logf("a: %d events wanted, %d pending, %d dropped", len(forA), pending, status.Dropped)
	require.Positive(t, status.Dropped)
	// The cap counts queued items; up to two transactions (the one in
	// flight and the next, formed meanwhile) hold more.
	require.LessOrEqual(t, pending, cfg.MaxQueuedPerService+2*DefaultMaxEventsPerTxn)
	require.Equal(t, len(forA), pending+int(status.Dropped), "every event a wanted is pending or counted as dropped")
	b, err := s.Status(ctx, "b")
	require.NoError(t, err)
	require.Zero(t, b.Dropped)

	// a comes back: it gets what was queued, in order, and new events
	// are queued for it again.
	asA.Up()
	s.ServiceUp("a")
	waitDelivered(t, asA, pending)
	got := asA.Delivered()
	kept := slices.DeleteFunc(slices.Clone(forA), func(id string) bool { return !slices.Contains(got, id) })
	require.Equal(t, kept, got, "what a receives is what it wanted, in order, without the dropped")
	waitFor(t, "a's queue to drain", func() bool { return faultPending(t, st, "a") == 0 })
	late := faultEvents("late", 5)
	require.NoError(t, s.Enqueue(ctx, late...))
	faultCheckDelivery(t, asA, append(got, faultIDs(late)...))
}
