package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/asdeliver/scheduler/store"
)

// retryPolicy is the Recoverer's schedule: Config.RetryInitial, doubling,
// capped at Config.RetryMax, jittered by Config.RetryJitter.
type retryPolicy struct {
	initial, max time.Duration
	jitter       float64
}

// newBackOff returns a fresh schedule that never gives up (backoff's
// default MaxElapsedTime would stop after 15 minutes).
func (p retryPolicy) newBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.initial),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(p.max),
		backoff.WithRandomizationFactor(p.jitter),
		backoff.WithMaxElapsedTime(0),
	)
	b.Reset()
	return b
}

// recover is the Recoverer: the deliverer's stage while the AS does not
// answer (phases downWaiting, downResending, downForming). After each wait
// (cut short by ServiceUp, the lease renewed meanwhile) it resends the
// oldest stored transaction; on success it continues at once with the next
// stored transaction, then with transactions formed from queued items, one
// at a time (each formed beside the Complete of the one before), the wait
// back at its first step. When the service is owed
// nothing it moves to upForming and returns nil, so the TransactionMaker
// takes over. Errors are errStopping, errStale and Store errors, as for
// deliverWhileUp; run brings it back here after them, with a new schedule.
func (d *deliverer) recover(ctx context.Context) error {
	b := d.retry.newBackOff()
	// A ServiceUp sent before this wait began says nothing about it.
	select {
	case <-d.upCh:
	default:
	}
	if d.phase == downWaiting {
		if err := d.waitToRetry(ctx, d.retryWait(b)); err != nil {
			return err
		}
	}
	var ahead *store.Txn // formed beside the last Complete
	for {
		if d.isStopping() {
			return errStopping
		}
		txn, fromStore := ahead, false
		if txn == nil {
			var err error
			if txn, fromStore, err = d.next(ctx); err != nil {
				return err
			}
		}
		ahead = nil
		if txn == nil {
			d.log.Info("application service is back up")
			d.setPhase(upForming)
			return nil
		}
		if err := d.startPut(ctx, txn, fromStore)(); err != nil {
			if !isSendFailure(err) {
				return err
			}
			// The transaction stays stored, to be resent first.
			d.failure = err
			d.setPhase(downWaiting)
			if err := d.waitToRetry(ctx, d.retryWait(b)); err != nil {
				return err
			}
			continue
		}
		// Past the stored transactions, the next is formed beside this
		// one's Complete: one commit between the 2xx and the next PUT.
		next, err := d.completeAndForm(ctx, txn, d.mayFormAhead() && d.mayBeQueued())
		if err != nil {
			return err
		}
		ahead = next
		b.Reset()
	}
}

// retryWait returns how long to wait before the next attempt: the next
// step of b, or, when the last failure was an answer with Retry-After (429,
// 503), what the AS asked for, capped at Config.RetryMax. b takes its step
// either way, so later failures without one keep backing off.
func (d *deliverer) retryWait(b *backoff.ExponentialBackOff) time.Duration {
	wait := b.NextBackOff()
	var sf *sendFailure
	if errors.As(d.failure, &sf) && sf.retryAfter > 0 {
		wait = min(sf.retryAfter, d.retry.max)
	}
	return wait
}

// waitToRetry is the wait of phase downWaiting, after which the deliverer
// retries, stored transactions first.
func (d *deliverer) waitToRetry(ctx context.Context, wait time.Duration) error {
	d.noteNextRetry(d.clock.Now().Add(wait))
	d.log.Info("application service is down; waiting before retrying", "backoff", wait)
	if err := d.wait(ctx, wait, d.upCh); err != nil {
		return err
	}
	d.setPhase(downResending)
	return nil
}

// isSendFailure reports whether err is a failure to deliver to the AS, as
// opposed to Stop, a lost lease or a Store error.
func isSendFailure(err error) bool { return errors.Is(err, errSendFailed) }
