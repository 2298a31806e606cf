package scheduler

import (
	"context"
	"sync"

	"github.com/asdeliver/scheduler/store"
)

// deliverWhileUp is the TransactionMaker: the deliverer's stage while the
// AS answers (phases upResending and upForming). It sends the service's
// stored transactions, oldest first, then forms each next one from the
// oldest queued items, one PUT in flight, and waits for a wake when the
// service is owed nothing. It returns nil after moving to downWaiting when
// a PUT fails (the failed transaction, and any formed ahead, stay stored
// for the Recoverer), errStopping at Stop, errStale when the lease is
// lost, or a Store error.
//
// While a PUT is in flight it forms the next transaction when a full
// batch is waiting, so that formation's commit overlaps the network
// instead of adding to it. A transaction formed ahead is stored like any
// other: if the PUT before it fails, the Recoverer resends both, oldest
// first. A delivered transaction is completed before the next PUT starts:
// were the process killed with it uncompleted, it would be sent again
// after a newer one, and the AS would see its IDs go down.
//
// It starts with a pass, not a wait: at Start, and after the Recoverer
// hands back, anything already queued leaves at once. A wake that arrives
// while a pass runs stays buffered and causes one more pass, so an item
// committed just after NextTxn found nothing is never stranded.
func (d *deliverer) deliverWhileUp(ctx context.Context) error {
	var (
		cur       *store.Txn // to send now
		fromStore bool       // cur was read back from the Store
	)
	for {
		if d.isStopping() {
			return errStopping
		}
		if cur == nil {
			var err error
			if cur, fromStore, err = d.next(ctx); err != nil {
				return err
			}
			if cur == nil {
				if err := d.wait(ctx, forever, d.wakeCh); err != nil {
					return err
				}
				continue
			}
		}

		awaitPut := d.startPut(ctx, cur, fromStore)
		var ahead *store.Txn
		var formErr error
		if d.mayFormAhead() && d.fullBatchWaiting() {
			ahead, formErr = d.form(ctx)
		}
		err := awaitPut()
		if err == nil {
			formNext := ahead == nil && formErr == nil && d.mayFormAhead() && d.mayBeQueued()
			var formed *store.Txn
			formed, err = d.completeAndForm(ctx, cur, formNext)
			if formNext {
				ahead = formed
			}
		}
		if err == nil {
			err = formErr
		}
		switch {
		case err == nil:
			cur, fromStore = ahead, false
		case isSendFailure(err):
			d.failure = err
			d.setPhase(downWaiting)
			return nil
		default:
			// What failed to complete, and what was formed ahead, stay
			// stored and are sent first next time.
			return err
		}
	}
}

// mayFormAhead reports whether the deliverer may form its next transaction
// before the current one is done: it is in a forming phase, UP or DOWN, so
// nothing stored waits to be sent first, and Stop has not begun.
func (d *deliverer) mayFormAhead() bool {
	return d.phase == d.phase.forming() && !d.isStopping()
}

// fullBatchWaiting reports whether enough items are queued to fill a
// transaction, as far as this process knows: then forming the next one
// while a PUT is in flight costs no batching.
func (d *deliverer) fullBatchWaiting() bool {
	return d.queued.Load() >= int64(d.limits.MaxFor(store.KindEvent))
}

// completeAndForm completes txn, which the AS has, and with formNext forms
// the next transaction beside it, from the oldest queued items: a store
// that merges concurrent calls (store/sqlite) makes both one commit, so
// one synced commit stands between a 2xx and the next PUT. A transaction
// formed while the Complete fails stays stored, and is sent after txn.
func (d *deliverer) completeAndForm(ctx context.Context, txn *store.Txn, formNext bool) (*store.Txn, error) {
	var (
		forming sync.WaitGroup
		next    *store.Txn
		formErr error
	)
	if formNext {
		forming.Go(func() { next, formErr = d.form(ctx) })
	}
	err := d.complete(ctx, txn)
	forming.Wait()
	if err == nil {
		err = formErr
	}
	return next, err
}
