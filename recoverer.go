package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// newBackOff returns the Recoverer's schedule: RetryInitial, doubling, capped
// at RetryMax, jittered by RetryJitter, and never giving up (backoff's
// default MaxElapsedTime would stop after 15 minutes).
func (s *Scheduler) newBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(s.cfg.RetryInitial),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(s.cfg.RetryMax),
		backoff.WithRandomizationFactor(s.cfg.RetryJitter),
		backoff.WithMaxElapsedTime(0),
	)
	b.Reset()
	return b
}

// recover is the Recoverer: it owns a service whose PUT failed. After each
// wait (cut short by ServiceUp) it resends the oldest stored transaction;
// on success it continues at once with the next stored transaction, then
// with transactions formed from queued items, the wait back at its first
// step. When the service is owed nothing it marks the AS UP and returns nil
// so the TransactionMaker takes over. Errors are errStopping, errStale and
// Store errors, as for deliverWhileUp.
func (s *Scheduler) recover(ctx context.Context, svc *service) error {
	b := s.newBackOff()
	// A ServiceUp sent before this outage says nothing about it.
	select {
	case <-svc.upCh:
	default:
	}
	wait := b.NextBackOff()
	for {
		svc.setDown(true, time.Now().Add(wait))
		svc.log.Info("application service is down; waiting before retrying", "backoff", wait)
		if !s.sleep(ctx, wait, svc.upCh) {
			return errStopping
		}
		for {
			if s.isStopping() {
				return errStopping
			}
			txn, fromStore, err := svc.next(ctx)
			if err != nil {
				return err
			}
			if txn == nil {
				svc.log.Info("application service is back up")
				return nil
			}
			err = svc.send(ctx, txn, fromStore)
			if err == nil {
				b.Reset()
				continue
			}
			if !errors.Is(err, errSendFailed) {
				return err
			}
			wait = b.NextBackOff()
			break
		}
	}
}

// sleep waits for d, or until cut (if not nil) receives; it returns false if
// the scheduler stops first.
func (s *Scheduler) sleep(ctx context.Context, d time.Duration, cut <-chan struct{}) bool {
	timer, stopTimer := s.newTimer(d)
	defer stopTimer()
	select {
	case <-timer:
		return true
	case <-cut:
		return true
	case <-s.stopping:
		return false
	case <-ctx.Done():
		return false
	}
}
