package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asdeliver/scheduler/internal/clock"
	"github.com/asdeliver/scheduler/internal/lifecycle"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// completeTimeout bounds recording a delivered transaction during Stop,
// after the run context is gone: skipping it would only cause a duplicate.
const completeTimeout = 5 * time.Second

// deliveryDeps is what every deliverer depends on, shared by all of them.
type deliveryDeps struct {
	store  store.Store
	sender *wire.Sender
	clock  clock.Clock
	log    *slog.Logger
	limits store.Limits
	retry  retryPolicy
	// owner names this process's leases; leaseTTL is their duration.
	owner    string
	leaseTTL time.Duration
	// pause is how long to wait before trying again after a Store error,
	// and between attempts to claim a lease another process holds.
	pause     time.Duration
	queryAuth bool     // Config.LegacyQueryAuth
	observer  Observer // Config.Observer, or nil
}

// phase is where a deliverer stands. Transitions (run drives them):
//
//	unclaimed ─Claim─▶ upResending ─nothing stored─▶ upForming
//	upResending, upForming ─PUT failed─▶ downWaiting
//	downWaiting ─wait over or ServiceUp─▶ downResending ─nothing stored─▶ downForming
//	downResending, downForming ─PUT failed─▶ downWaiting
//	downForming ─nothing queued─▶ upForming
//	any ─lease lost─▶ unclaimed ─Claim─▶ upResending, or downWaiting if it was DOWN
//	any ─Store error─▶ upResending, or downWaiting if it was DOWN, after a pause
//
// A resending phase sends the service's stored transactions first, oldest
// first: after a claim, a failure or a Store error some may wait, and none
// may leave after a newer one.
type phase uint8

const (
	unclaimed     phase = iota // no lease yet: claim it first
	upResending                // UP: stored transactions may wait; they go first
	upForming                  // UP: nothing stored; form from queued items, one PUT in flight
	downWaiting                // DOWN: a PUT failed; wait before retrying
	downResending              // DOWN: retry the stored transactions, oldest first
	downForming                // DOWN: nothing stored; send what is queued, one at a time
)

// isDown reports whether p belongs to the Recoverer.
func (p phase) isDown() bool { return p >= downWaiting }

// resumed returns the phase to resume in after an interruption (a lost
// lease, a Store error): stored transactions may wait, so UP resends them
// first; DOWN waits first, as it would have after a failed PUT.
func (p phase) resumed() phase {
	if p.isDown() {
		return downWaiting
	}
	return upResending
}

// forming returns the forming phase of p's side: the phase to move on to
// when nothing stored waits.
func (p phase) forming() phase {
	if p.isDown() {
		return downForming
	}
	return upForming
}

// deliverer owns one application service: one goroutine (run) that holds
// the service's lease and runs the TransactionMaker (txnmaker.go) while the
// AS answers and the Recoverer (recoverer.go) while it does not, so exactly
// one of them acts at any moment.
type deliverer struct {
	deliveryDeps
	id  string
	reg atomic.Pointer[Registration] // replaced by UpdateServices; read at each use
	log *slog.Logger

	retired chan struct{} // closed when UpdateServices removes the service
	ended   chan struct{} // closed when run has returned

	wakeCh chan struct{} // capacity 1: new work may be queued
	upCh   chan struct{} // capacity 1: the AS says it is back (ServiceUp)

	// Owned by the run goroutine.
	stopping <-chan struct{} // closed when Stop begins; set by run
	phase    phase
	lease    lease
	failure  error // the failed delivery that led to downWaiting

	// queued estimates the items queued and not yet in a transaction:
	// raised by this process's commits, lowered by formations, set from
	// the Store at Start and by the poller. It only decides whether to
	// form the next transaction during a PUT.
	queued atomic.Int64
	// queuedElsewhere says that another process signalled work for the
	// service (store.SignalWork) since the last formation began: its
	// items are not in queued, so this alone says that forming the next
	// transaction ahead may pay.
	queuedElsewhere atomic.Bool
	// dropped counts the items not queued for the service since Start
	// because its queue was full (Config.MaxQueuedPerService); dropping
	// says whether the last call found it full, to log each episode once.
	dropped  atomic.Int64
	dropping atomic.Bool

	mu     sync.Mutex
	status serviceStatus
}

// serviceStatus is the part of ServiceStatus the deliverer keeps in memory.
type serviceStatus struct {
	down        bool
	lastSuccess time.Time
	lastError   string
	lastHTTP    int
	lastAnswer  string
	nextRetry   time.Time
	failures    int // consecutive failed attempts
	delivered   int64
	damagedTxn  int64 // the stored transaction that failed its hash check last, if any
	// refusedLogged: a 401 or 403 was logged at ERROR since the last success.
	refusedLogged bool
}

func newDeliverer(deps deliveryDeps, reg *Registration) *deliverer {
	log := deps.log.With("service", reg.ID)
	d := &deliverer{
		deliveryDeps: deps,
		id:           reg.ID,
		log:          log,
		retired:      make(chan struct{}),
		ended:        make(chan struct{}),
		wakeCh:       make(chan struct{}, 1),
		upCh:         make(chan struct{}, 1),
	}
	d.reg.Store(reg)
	return d
}

// msgLeaseLost is logged when a deliverer finds its lease gone.
const msgLeaseLost = "lease on the service lapsed or was taken by another process; claiming it again"

// Signals that end what a deliverer is doing.
var (
	// errStopping means Stop has begun: form no new transaction.
	errStopping = errors.New("stopping")
	// errStale means the lease was lost: the owner must claim it again.
	errStale = errors.New("lease lost")
	// errSendFailed is matched by every failure to deliver a transaction
	// to the AS.
	errSendFailed = errors.New("delivery failed")
)

// sendFailure is the AS's failure to take a transaction, with how long it
// asked the scheduler to wait before the next attempt (Retry-After), if
// it did. It matches errSendFailed.
type sendFailure struct {
	err        error
	retryAfter time.Duration
}

func (e *sendFailure) Error() string   { return e.err.Error() }
func (e *sendFailure) Unwrap() []error { return []error{errSendFailed, e.err} }

// run is the deliverer's goroutine, until Stop: claim the lease, then run
// the stage the phase names. It returns once stopping is closed and what
// it has begun is done, or at once when ctx ends.
func (d *deliverer) run(ctx context.Context, stopping <-chan struct{}) {
	d.stopping = stopping
	defer d.release()
	resume := upResending // the phase to take once the lease is held
	for {
		var err error
		switch {
		case d.phase == unclaimed:
			var held bool
			if held, err = d.claim(ctx); held {
				d.setPhase(resume)
			}
		case d.phase.isDown():
			err = d.recover(ctx)
		default:
			err = d.deliverWhileUp(ctx)
		}
		switch {
		case err == nil:
		case errors.Is(err, errStopping):
			return
		case errors.Is(err, errStale):
			d.log.Warn(msgLeaseLost)
			resume = d.phase.resumed()
			d.lease = lease{}
			d.setPhase(unclaimed)
		default:
			// The failed call may have changed the Store all the same, or
			// left a delivered transaction in it: a Complete that did not
			// record a PUT that succeeded, a NextTxn whose commit outcome
			// was lost. Look at the stored transactions first, so such a
			// transaction is resent (same ID, same bytes) before any newer
			// one rather than left behind them.
			d.log.Error("store error; retrying", "error", err)
			d.setPhase(d.phase.resumed())
			if err := d.sleep(ctx, d.pause, nil); err != nil {
				return
			}
		}
	}
}

// setPhase moves to p, and keeps the status's view of it.
func (d *deliverer) setPhase(p phase) {
	d.phase = p
	if p == unclaimed {
		return
	}
	d.mu.Lock()
	d.status.down = p.isDown()
	if !d.status.down {
		d.status.nextRetry = time.Time{}
	}
	d.mu.Unlock()
}

// forever is a wait with no deadline: only a cut, Stop or the lease ends it.
const forever time.Duration = -1

// wait waits for dur (forever: no deadline) or until cut receives, and
// renews the lease whenever it is due meanwhile (see renewDue), so that no
// wait, however long, lets it lapse. It returns errStopping when the
// scheduler stops first and errStale when the lease is lost.
func (d *deliverer) wait(ctx context.Context, dur time.Duration, cut <-chan struct{}) error {
	deadline := d.clock.Now().Add(dur)
	for {
		now := d.clock.Now()
		step, renewing := deadline.Sub(now), false
		if dur == forever || d.lease.renewAt.Before(deadline) {
			step, renewing = max(d.lease.renewAt.Sub(now), 0), true
		}
		if !renewing && step <= 0 {
			return nil
		}
		t := d.clock.NewTimer(step)
		select {
		case <-t.C():
		case <-cut:
			t.Stop()
			return nil
		case <-d.stopping:
			t.Stop()
			return errStopping
		case <-ctx.Done():
			t.Stop()
			return errStopping
		}
		if !renewing {
			return nil
		}
		if err := d.renewDue(ctx); err != nil {
			return err
		}
	}
}

// sleep waits for dur without a lease to keep: before a claim, or after a
// Store error (the next Store call finds out about the lease). A receive on
// cut (nil: none) ends it early.
func (d *deliverer) sleep(ctx context.Context, dur time.Duration, cut <-chan struct{}) error {
	t := d.clock.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-cut:
		return nil
	case <-d.stopping:
		return errStopping
	case <-ctx.Done():
		return errStopping
	}
}

func (d *deliverer) isStopping() bool { return lifecycle.Closed(d.stopping) }

// wake tells the owner that work may be queued; it never blocks.
func (d *deliverer) wake() {
	lifecycle.Poke(d.wakeCh)
}

// serviceUp cuts the Recoverer's current wait short; a no-op while UP.
func (d *deliverer) serviceUp() {
	if d.isDown() {
		lifecycle.Poke(d.upCh)
	}
}

// isDown reports whether the service is DOWN: its last delivery failed.
func (d *deliverer) isDown() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status.down
}

// endpoint says where and how to reach the AS; read at every send, so
// stored transactions always go to the URL and token configured now.
func (d *deliverer) endpoint() wire.Endpoint {
	reg := d.reg.Load()
	return wire.Endpoint{
		URL:       reg.URL,
		HSToken:   reg.HSToken,
		Redact:    []string{reg.ASToken},
		QueryAuth: d.queryAuth,
	}
}

// storeErr maps a Store error: a stale epoch means the lease is lost.
func storeErr(what string, err error) error {
	if errors.Is(err, store.ErrStaleEpoch) {
		return errStale
	}
	return fmt.Errorf("error %s: %w", what, err)
}

// next returns the transaction to send now: in a resending phase the
// oldest stored one (fromStore true: read back, to be checked before
// sending), moving on to the forming phase when none is left; else one
// formed from the oldest queued items. It returns nil when the service is
// owed nothing.
func (d *deliverer) next(ctx context.Context) (txn *store.Txn, fromStore bool, err error) {
	if err := d.renewDue(ctx); err != nil {
		return nil, false, err
	}
	if d.phase == upResending || d.phase == downResending {
		txns, err := d.store.Txns(ctx, d.id, 1)
		if err != nil {
			return nil, false, storeErr("listing stored transactions", err)
		}
		if len(txns) > 0 {
			return &txns[0], true, nil
		}
		d.setPhase(d.phase.forming())
	}
	txn, err = d.form(ctx)
	return txn, false, err
}

// form forms a transaction from the oldest queued items, nil if none.
func (d *deliverer) form(ctx context.Context) (*store.Txn, error) {
	// The body format follows the registration as it is now, and is
	// recorded with the transaction: its retries keep it.
	format := wire.FormatFor(bodyFlags(d.reg.Load()))
	elsewhere := d.queuedElsewhere.Swap(false)
	txn, err := d.store.NextTxn(ctx, d.id, d.lease.epoch, format, d.limits)
	if elsewhere && (err != nil || txn != nil) {
		// Only a formation that finds the queue empty shows that the
		// other processes' items are all taken.
		d.queuedElsewhere.Store(true)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, errStopping // Stop ran out of time: not a store error
		}
		return nil, storeErr("forming a transaction", err)
	}
	if txn != nil {
		// Items of other processes are not counted: keep the estimate at
		// zero or above.
		for n := int64(len(txn.Items)); ; {
			v := d.queued.Load()
			if d.queued.CompareAndSwap(v, max(v-n, 0)) {
				break
			}
		}
	}
	return txn, nil
}

// mayBeQueued reports whether items may wait to be formed, as far as this
// process knows: its own commits counted in queued, or another process's
// signal.
func (d *deliverer) mayBeQueued() bool {
	return d.queued.Load() > 0 || d.queuedElsewhere.Load()
}

// workElsewhere tells the owner that another process queued work.
func (d *deliverer) workElsewhere() {
	d.queuedElsewhere.Store(true)
	d.wake()
}

// put PUTs txn to the AS. With verify it first checks the items against
// the hash recorded when the transaction was formed: for one read back
// from the Store, not one this owner has just formed. Failures to deliver
// wrap errSendFailed; a PUT cancelled by Stop returns errStopping. It
// touches only the status, so it may run beside the owner goroutine.
func (d *deliverer) put(ctx context.Context, txn *store.Txn, verify bool) error {
	if verify && !bytes.Equal(store.HashItems(txn.Items), txn.Hash) {
		// The stored items no longer match what was formed: sending them
		// under the same ID would break the promise of identical retries.
		// The service stays DOWN, retried with backoff (the store may
		// read right again), until an operator steps in.
		err := fmt.Errorf("%w: stored transaction %d fails its hash check: its items changed since it was formed "+
			"(a damaged store?); it is not sent. To drop the service's stored work, remove it from "+
			"Config.Services and call Scheduler.Purge", errSendFailed, txn.ID)
		d.noteDamaged(err, txn)
		dl := newDelivery(d.id, txn)
		dl.Err = err
		d.observe(dl)
		return err
	}
	body, err := wire.Body(txn.Format, txn.Items)
	if err != nil {
		return fmt.Errorf("error assembling transaction %d: %w", txn.ID, err)
	}
	started := d.clock.Now()
	res, err := d.sender.PutTxn(ctx, d.endpoint(), txn.ID, body)
	dl := newDelivery(d.id, txn)
	dl.Bytes, dl.Duration, dl.Status, dl.Err = len(body), d.clock.Now().Sub(started), res.Status, err
	if err != nil {
		if ctx.Err() != nil {
			// Stop ran out of time and cancelled the PUT: not the AS's
			// fault, and the next run resends the transaction.
			return errStopping
		}
		d.noteFailure(res, err, txn)
		d.observe(dl)
		return &sendFailure{err: err, retryAfter: res.RetryAfter}
	}
	d.noteSuccess(res, len(txn.Items))
	d.observe(dl)
	return nil
}

// complete records in the Store that the AS has txn, even if Stop has just
// cancelled ctx: otherwise the next run would send it again.
func (d *deliverer) complete(ctx context.Context, txn *store.Txn) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	if err := d.store.Complete(cctx, d.id, d.lease.epoch, txn.ID); err != nil {
		return storeErr("completing a delivered transaction", err)
	}
	return nil
}

func (d *deliverer) noteSuccess(res wire.Result, items int) {
	d.mu.Lock()
	d.status.damagedTxn = 0
	d.status.refusedLogged = false
	d.status.lastSuccess = d.clock.Now()
	d.status.lastHTTP = res.Status
	d.status.lastAnswer = res.Excerpt
	d.status.failures = 0
	d.status.delivered += int64(items)
	d.mu.Unlock()
}

func (d *deliverer) noteFailure(res wire.Result, err error, txn *store.Txn) {
	d.mu.Lock()
	d.status.lastError = err.Error()
	d.status.lastHTTP = res.Status
	d.status.lastAnswer = res.Excerpt
	d.status.failures++
	failures := d.status.failures
	d.mu.Unlock()
	attrs := []any{"txn_id", txn.ID, "attempt", failures, "status", res.Status, "error", err}
	if res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden {
		// A misconfigured token: said at ERROR once per outage, since
		// every retry fails alike until an operator fixes it.
		d.mu.Lock()
		first := !d.status.refusedLogged
		d.status.refusedLogged = true
		d.mu.Unlock()
		if first {
			d.log.Error("application service refused our credentials (hs_token mismatch?); "+
				"retrying without repeating this until a delivery succeeds", attrs...)
			return
		}
		d.log.Debug("application service refused our credentials again", attrs...)
		return
	}
	d.log.Warn("error delivering transaction", attrs...)
}

// noteDamaged records a stored transaction that cannot be sent as it was
// formed. It logs at ERROR once per such transaction, not at every retry.
func (d *deliverer) noteDamaged(err error, txn *store.Txn) {
	d.mu.Lock()
	d.status.lastError = err.Error()
	d.status.lastHTTP, d.status.lastAnswer = 0, ""
	d.status.failures++
	first := d.status.damagedTxn != txn.ID
	d.status.damagedTxn = txn.ID
	d.mu.Unlock()
	if first {
		d.log.Error("stored transaction cannot be sent", "txn_id", txn.ID, "error", err)
	}
}

// noteNextRetry records when the Recoverer retries next.
func (d *deliverer) noteNextRetry(at time.Time) {
	d.mu.Lock()
	d.status.nextRetry = at
	d.mu.Unlock()
}

func (d *deliverer) snapshot() serviceStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}
