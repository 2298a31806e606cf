package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// leaseRenewals is how many times per Config.LeaseTTL the holder of a
// service's lease renews it: also while it waits and while a PUT is in
// flight, so that it never lapses while its holder lives.
const leaseRenewals = 5

// lease is a deliverer's hold on its service's lease.
type lease struct {
	epoch   store.Epoch // zero: not held
	renewAt time.Time   // when to renew it next
	// validUntil is until when this process acts on the lease: one
	// renewal interval before the store would let it expire, counted from
	// before the call that granted it, so that a holder that cannot renew
	// stops sending before another process may start.
	validUntil time.Time
	lost       bool // a renewal found it gone: claim again
}

// claimSpacing is the least time between two claims of a lease that
// another process holds: a wake (work appended here, or a signal that the
// holder released it) prompts the next claim at once, but no sooner.
const claimSpacing = 50 * time.Millisecond

// claim obtains the lease, and reports whether it did. Without it (another
// process holds it, or the Store failed) it waits before returning, so run
// tries again at that pace: PollInterval, cut short by a wake while
// another process holds the lease (it may have just released it). It
// returns errStopping when the scheduler stops first.
func (d *deliverer) claim(ctx context.Context) (bool, error) {
	asked := d.clock.Now()
	epoch, err := d.store.Claim(ctx, d.id, d.owner, d.leaseTTL)
	if err != nil {
		if !errors.Is(err, store.ErrLeaseHeld) {
			d.log.Error("error claiming the service's lease", "error", err)
			return false, d.sleep(ctx, d.pause, nil)
		}
		if err := d.sleep(ctx, d.pause, d.wakeCh); err != nil {
			return false, err
		}
		// A claim is followed by a pass anyway: the wake is not kept.
		return false, d.sleep(ctx, asked.Add(claimSpacing).Sub(d.clock.Now()), nil)
	}
	d.lease = lease{epoch: epoch}
	d.lease.granted(d, asked)
	return true, nil
}

// granted records a grant or renewal asked for at asked.
func (l *lease) granted(d *deliverer, asked time.Time) {
	interval := d.leaseTTL / leaseRenewals
	l.renewAt = d.clock.Now().Add(interval)
	l.validUntil = asked.Add(d.leaseTTL - interval)
}

// renewDue renews the lease if it is time to. It returns errStale when the
// lease is lost: taken by another process, lapsed, or not renewed in time
// because the Store failed. A Store error before then is logged and the
// renewal retried after a pause.
func (d *deliverer) renewDue(ctx context.Context) error {
	if d.lease.lost {
		return errStale
	}
	if d.clock.Now().Before(d.lease.renewAt) {
		return nil
	}
	asked := d.clock.Now()
	epoch, err := d.store.Claim(ctx, d.id, d.owner, d.leaseTTL)
	switch {
	case errors.Is(err, store.ErrLeaseHeld):
		d.lease.lost = true
	case err != nil:
		if !d.clock.Now().Before(d.lease.validUntil) {
			d.log.Error("error renewing the service's lease; no longer acting on it", "error", err)
			d.lease.lost = true
			break
		}
		d.log.Warn("error renewing the service's lease; retrying", "error", err)
		d.lease.renewAt = d.clock.Now().Add(min(d.pause, d.leaseTTL/leaseRenewals))
		return nil
	case epoch != d.lease.epoch:
		// The lease lapsed and this claim is a new grant: whatever was
		// formed under the old epoch may have been taken over meanwhile.
		d.lease.lost = true
	default:
		d.lease.granted(d, asked)
		return nil
	}
	return errStale
}

// release frees the lease, so another process may take over at once.
func (d *deliverer) release() {
	if d.lease.epoch == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	if err := d.store.Release(ctx, d.id, d.lease.epoch); err != nil && !errors.Is(err, store.ErrStaleEpoch) {
		d.log.Warn("error releasing the service's lease", "error", err)
	}
	d.lease = lease{}
}

// startPut begins the PUT of txn (see put) and returns the function that
// waits for its outcome. While it waits it renews the lease when due; if
// the lease is lost meanwhile it cancels the PUT and returns errStale, so
// this process never sends for a service after another may have started.
// Stop does not cut the wait short: the PUT may finish until ctx ends.
func (d *deliverer) startPut(ctx context.Context, txn *store.Txn, verify bool) func() error {
	putCtx, cancel := context.WithCancel(ctx)
	var putErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		putErr = d.put(putCtx, txn, verify)
	}()
	return func() error {
		defer cancel()
		for {
			t := d.clock.NewTimer(max(d.lease.renewAt.Sub(d.clock.Now()), 0))
			select {
			case <-finished:
				t.Stop()
				return putErr
			case <-t.C():
			}
			if err := d.renewDue(ctx); err != nil {
				cancel()
				<-finished
				return err
			}
		}
	}
}
