package scheduler

import (
	"context"
	"errors"
	"time"
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
// It starts with a pass, not a wait: at Start, and after the Recoverer hands
// back, anything already queued leaves at once. A wake that arrives while a
// pass runs stays buffered and causes one more pass, so an item committed
// just after NextTxn found nothing is never stranded.
func (s *Scheduler) deliverWhileUp(ctx context.Context, svc *service) error {
	svc.setDown(false, time.Time{})
	for {
		for {
			if s.isStopping() {
				return errStopping
			}
			txn, err := svc.next(ctx)
			if err != nil {
				return err
			}
			if txn == nil {
				break
			}
			if err := svc.send(ctx, txn); err != nil {
				return err
			}
		}
		select {
		case <-s.stopping:
			return errStopping
		case <-svc.wakeCh:
		}
	}
}
