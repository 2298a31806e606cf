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

	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// leaseTTL is how long a service's lease lasts without renewal; it outlives
// the longest PUT so that, with several processes on one Store, a lease
// cannot lapse while its holder is still sending. leaseRenewAfter is the age
// at which the owner renews it.
const (
	leaseTTL        = 5 * time.Minute
	leaseRenewAfter = time.Minute
)

// completeTimeout bounds recording a delivered transaction during Stop,
// after the run context is gone: skipping it would only cause a duplicate.
const completeTimeout = 5 * time.Second

// service is the per-AS owner: one goroutine that holds the service's lease
// and alternates between the TransactionMaker (while the AS is UP) and the
// Recoverer (while it is DOWN), so exactly one of them acts at any moment.
type service struct {
	s   *Scheduler
	reg *Registration
	log *slog.Logger

	wakeCh chan struct{} // capacity 1: new work may be queued
	upCh   chan struct{} // capacity 1: the AS says it is back (ServiceUp)

	// Owned by the service goroutine.
	epoch      store.Epoch
	claimedAt  time.Time
	haveStored bool // stored transactions may exist (after a claim or a failure)

	// queued estimates the items queued and not yet in a transaction:
	// raised by this process's commits, lowered by formations, set from
	// the Store at Start and by the poller. It only decides whether to
	// form the next transaction during a PUT.
	queued atomic.Int64

	mu     sync.Mutex
	status serviceStatus
}

// serviceStatus is the part of ServiceStatus the owner keeps in memory.
type serviceStatus struct {
	down        bool
	lastSuccess time.Time
	lastError   string
	lastHTTP    int
	lastAnswer  string
	nextRetry   time.Time
	failures    int // consecutive failed attempts
	delivered   int64
}

// errStale means the lease was lost: the owner must claim it again.
var errStale = errors.New("lease lost")

func newService(s *Scheduler, reg *Registration) *service {
	return &service{
		s:      s,
		reg:    reg,
		log:    s.log.With("service", reg.ID),
		wakeCh: make(chan struct{}, 1),
		upCh:   make(chan struct{}, 1),
	}
}

// endpoint says where and how to reach the AS; read at every send, so
// stored transactions always go to the URL and token configured now.
func (svc *service) endpoint() wire.Endpoint {
	return wire.Endpoint{
		URL:       svc.reg.URL,
		HSToken:   svc.reg.HSToken,
		Redact:    []string{svc.reg.ASToken},
		QueryAuth: svc.s.cfg.LegacyQueryAuth,
	}
}

// wake tells the owner that work may be queued; it never blocks.
func (svc *service) wake() {
	select {
	case svc.wakeCh <- struct{}{}:
	default:
	}
}

// serviceUp cuts the Recoverer's current wait short; a no-op while UP.
func (svc *service) serviceUp() {
	svc.mu.Lock()
	down := svc.status.down
	svc.mu.Unlock()
	if !down {
		return
	}
	select {
	case svc.upCh <- struct{}{}:
	default:
	}
}

// run is the service goroutine: claim the lease, deliver while UP, recover
// while DOWN, until Stop. After a Store error it waits PollInterval and goes
// back to the stage it was in, so a failing disk never makes a DOWN service
// look UP nor resend without backoff.
func (svc *service) run(ctx context.Context) {
	defer svc.release()
	down := false
	for svc.claim(ctx) {
		var err error
		if down {
			if err = svc.s.recover(ctx, svc); err == nil {
				down = false
				continue
			}
		} else {
			if err = svc.s.deliverWhileUp(ctx, svc); errors.Is(err, errSendFailed) {
				down = true
				continue
			}
		}
		switch {
		case errors.Is(err, errStopping):
			return
		case errors.Is(err, errStale):
			svc.log.Warn("lease on the service was taken by another process; claiming it again")
			svc.epoch = 0
		default:
			// The failed call may have changed the Store all the same, or
			// left a delivered transaction in it: a Complete that did not
			// record a PUT that succeeded, a NextTxn whose commit outcome
			// was lost. Look at the stored transactions first, so such a
			// transaction is resent (same ID, same bytes) before any newer
			// one rather than left behind them.
			svc.haveStored = true
			svc.log.Error("store error; retrying", "error", err)
			if !svc.s.sleep(ctx, svc.s.cfg.PollInterval, nil) {
				return
			}
		}
	}
}

// claim obtains the lease, waiting while another process holds it. It
// returns false when the scheduler stops first.
func (svc *service) claim(ctx context.Context) bool {
	for svc.epoch == 0 {
		epoch, err := svc.s.cfg.Store.Claim(ctx, svc.reg.ID, svc.s.owner, leaseTTL)
		if err == nil {
			svc.epoch, svc.claimedAt, svc.haveStored = epoch, time.Now(), true
			return true
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			svc.log.Error("error claiming the service's lease", "error", err)
		}
		if !svc.s.sleep(ctx, svc.s.cfg.PollInterval, nil) {
			return false
		}
	}
	return true
}

// renew extends the lease once it is old enough to need it.
func (svc *service) renew(ctx context.Context) error {
	if time.Since(svc.claimedAt) < leaseRenewAfter {
		return nil
	}
	epoch, err := svc.s.cfg.Store.Claim(ctx, svc.reg.ID, svc.s.owner, leaseTTL)
	if err != nil {
		if errors.Is(err, store.ErrLeaseHeld) {
			return errStale
		}
		return fmt.Errorf("error renewing the lease: %w", err)
	}
	if epoch != svc.epoch {
		return errStale
	}
	svc.claimedAt = time.Now()
	return nil
}

func (svc *service) release() {
	if svc.epoch == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	if err := svc.s.cfg.Store.Release(ctx, svc.reg.ID, svc.epoch); err != nil && !errors.Is(err, store.ErrStaleEpoch) {
		svc.log.Warn("error releasing the service's lease", "error", err)
	}
	svc.epoch = 0
}

// storeErr maps a Store error: a stale epoch means the lease is lost.
func storeErr(what string, err error) error {
	if errors.Is(err, store.ErrStaleEpoch) {
		return errStale
	}
	return fmt.Errorf("error %s: %w", what, err)
}

// oldestStored returns the service's oldest stored transaction, or nil.
func (svc *service) oldestStored(ctx context.Context) (*store.Txn, error) {
	txns, err := svc.s.cfg.Store.Txns(ctx, svc.reg.ID, 1)
	if err != nil {
		return nil, storeErr("listing stored transactions", err)
	}
	if len(txns) == 0 {
		return nil, nil
	}
	return &txns[0], nil
}

// next returns the transaction to send now: the oldest stored one if any
// may exist (fromStore true: read back, to be checked before sending), else
// one formed from the oldest queued items; nil when the service is owed
// nothing.
func (svc *service) next(ctx context.Context) (txn *store.Txn, fromStore bool, err error) {
	if err := svc.renew(ctx); err != nil {
		return nil, false, err
	}
	if svc.haveStored {
		txn, err := svc.oldestStored(ctx)
		if err != nil || txn != nil {
			return txn, true, err
		}
		svc.haveStored = false
	}
	txn, err = svc.form(ctx)
	return txn, false, err
}

// form forms a transaction from the oldest queued items, nil if none.
func (svc *service) form(ctx context.Context) (*store.Txn, error) {
	// The body format follows the registration as it is now, and is
	// recorded with the transaction: its retries keep it.
	format := wire.FormatFor(bodyFlags(svc.reg))
	txn, err := svc.s.cfg.Store.NextTxn(ctx, svc.reg.ID, svc.epoch, format, svc.s.limits)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errStopping // Stop ran out of time: not a store error
		}
		return nil, storeErr("forming a transaction", err)
	}
	if txn != nil {
		svc.queued.Add(-int64(len(txn.Items)))
	}
	return txn, nil
}

// fullBatchWaiting reports whether enough items are queued to fill a
// transaction, as far as this process knows: then forming the next one
// while a PUT is in flight costs no batching.
func (svc *service) fullBatchWaiting() bool {
	return svc.queued.Load() >= int64(svc.s.cfg.MaxEventsPerTxn)
}

// errSendFailed wraps every failure to deliver a transaction to the AS.
var errSendFailed = errors.New("delivery failed")

// put PUTs txn to the AS. With verify it first checks the items against
// the hash recorded when the transaction was formed: for one read back
// from the Store, not one this owner has just formed. Failures to deliver
// wrap errSendFailed; a PUT cancelled by Stop returns errStopping. It
// touches only the status, so it may run beside the owner goroutine.
func (svc *service) put(ctx context.Context, txn *store.Txn, verify bool) error {
	if verify && !bytes.Equal(store.HashItems(txn.Items), txn.Hash) {
		// The stored items no longer match what was formed: sending them
		// under the same ID would break the promise of identical retries.
		return fmt.Errorf("stored transaction %d of %s fails its hash check; refusing to send it", txn.ID, svc.reg.ID)
	}
	body, err := wire.Body(txn.Format, txn.Items)
	if err != nil {
		return fmt.Errorf("error assembling transaction %d: %w", txn.ID, err)
	}
	res, err := svc.s.sender.PutTxn(ctx, svc.endpoint(), txn.ID, body)
	if err != nil {
		if ctx.Err() != nil {
			// Stop ran out of time and cancelled the PUT: not the AS's
			// fault, and the next run resends the transaction.
			return errStopping
		}
		svc.noteFailure(res, err, txn)
		return fmt.Errorf("%w: %w", errSendFailed, err)
	}
	svc.noteSuccess(res, len(txn.Items))
	return nil
}

// complete records in the Store that the AS has txn, even if Stop has just
// cancelled ctx: otherwise the next run would send it again.
func (svc *service) complete(ctx context.Context, txn *store.Txn) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	if err := svc.s.cfg.Store.Complete(cctx, svc.reg.ID, svc.epoch, txn.ID); err != nil {
		return storeErr("completing a delivered transaction", err)
	}
	return nil
}

// send PUTs txn and completes it: the Recoverer's one-at-a-time path.
func (svc *service) send(ctx context.Context, txn *store.Txn, fromStore bool) error {
	if err := svc.put(ctx, txn, fromStore); err != nil {
		if errors.Is(err, errSendFailed) || errors.Is(err, errStopping) {
			svc.haveStored = true // the transaction stays stored, to be resent first
		}
		return err
	}
	return svc.complete(ctx, txn)
}

func (svc *service) noteSuccess(res wire.Result, items int) {
	svc.mu.Lock()
	svc.status.lastSuccess = time.Now()
	svc.status.lastHTTP = res.Status
	svc.status.lastAnswer = res.Excerpt
	svc.status.failures = 0
	svc.status.delivered += int64(items)
	svc.mu.Unlock()
}

func (svc *service) noteFailure(res wire.Result, err error, txn *store.Txn) {
	svc.mu.Lock()
	svc.status.lastError = err.Error()
	svc.status.lastHTTP = res.Status
	svc.status.lastAnswer = res.Excerpt
	svc.status.failures++
	failures := svc.status.failures
	svc.mu.Unlock()
	attrs := []any{"txn_id", txn.ID, "attempt", failures, "status", res.Status, "error", err}
	if res.Status == http.StatusUnauthorized || res.Status == http.StatusForbidden {
		svc.log.Error("application service refused our credentials (hs_token mismatch?)", attrs...)
		return
	}
	svc.log.Warn("error delivering transaction", attrs...)
}

func (svc *service) setDown(down bool, nextRetry time.Time) {
	svc.mu.Lock()
	svc.status.down = down
	svc.status.nextRetry = nextRetry
	svc.mu.Unlock()
}

func (svc *service) snapshot() serviceStatus {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.status
}
