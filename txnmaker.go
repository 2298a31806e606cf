package scheduler

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// errStopping means Stop has begun: form no new transaction.
var errStopping = errors.New("stopping")

// deliverWhileUp is the TransactionMaker: while the AS answers, it sends
// the service's oldest stored transaction or forms the next one from the
// oldest queued items, one transaction in flight, and waits for a wake when
// the service is owed nothing. It returns an error wrapping errSendFailed
// when a PUT fails (the caller hands the service to the Recoverer, the
// failed transaction staying stored), errStopping at Stop, errStale when
// the lease is lost, or a Store error.
//
// While a PUT is in flight it forms the next transaction when a full
// batch is waiting, so that formation's commit overlaps the network
// instead of adding to it. A transaction formed ahead is stored like any
// other: if the PUT before it fails, the Recoverer resends both, oldest
// first. A delivered transaction is completed before the next PUT starts:
// were the process killed with it uncompleted, it would be sent again
// after a newer one, and the AS would see its IDs go down.
//
// It starts with a pass, not a wait: at Start, and after the Recoverer hands
// back, anything already queued leaves at once. A wake that arrives while a
// pass runs stays buffered and causes one more pass, so an item committed
// just after NextTxn found nothing is never stranded.
func (s *Scheduler) deliverWhileUp(ctx context.Context, svc *service) error {
	svc.setDown(false, time.Time{})
	var (
		cur       *store.Txn // to send now
		fromStore bool       // cur was read back from the Store
	)
	for {
		if s.isStopping() {
			return errStopping
		}
		if cur == nil {
			var err error
			if cur, fromStore, err = svc.next(ctx); err != nil {
				return err
			}
			if cur == nil {
				select {
				case <-s.stopping:
					return errStopping
				case <-svc.wakeCh:
				}
				continue
			}
		}

		putErr := make(chan error, 1)
		go func(txn *store.Txn, verify bool) { putErr <- svc.put(ctx, txn, verify) }(cur, fromStore)
		var ahead *store.Txn
		var formErr error
		if s.mayFormAhead(svc) && svc.fullBatchWaiting() {
			ahead, formErr = svc.form(ctx)
		}
		err := <-putErr
		if err == nil {
			var forming sync.WaitGroup
			if ahead == nil && formErr == nil && s.mayFormAhead(svc) && svc.queued.Load() > 0 {
				// Form the next transaction while this one is completed:
				// both calls share one commit of a store that merges them.
				forming.Go(func() { ahead, formErr = svc.form(ctx) })
			}
			err = svc.complete(ctx, cur)
			forming.Wait()
		}
		if err == nil {
			err = formErr
		}
		if err != nil {
			// What failed to send or to complete, and what was formed
			// ahead, stay stored and are sent first next time.
			svc.haveStored = true
			return err
		}
		cur, fromStore = ahead, false
	}
}

// mayFormAhead reports whether svc may form its next transaction before
// the current one is done: nothing stored waits to be sent first, and Stop
// has not begun.
func (s *Scheduler) mayFormAhead(svc *service) bool {
	return !svc.haveStored && !s.isStopping()
}
