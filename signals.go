package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/internal/clock"
	"github.com/asdeliver/scheduler/store"
)

// publishTimeout bounds publishing one ServiceUp to other processes.
const publishTimeout = 5 * time.Second

// signals carries wake-ups between the processes that share a Store with a
// store.Notifier (store/postgres): it wakes the deliverer of a service
// that another process queued work for, cuts short the retry wait of one
// whose AS another process heard from (ServiceUp), and publishes this
// process's ServiceUp calls to the others. Signals are hints; the poller
// still finds whatever one that was lost announced.
type signals struct {
	notifier  store.Notifier
	deliverer func(id string) *deliverer // of a configured service, or nil
	clock     clock.Clock
	log       *slog.Logger
	pause     time.Duration // before watching again after an error
	ups       chan string   // ServiceUp calls of this process, to publish
}

// publish queues a ServiceUp of this process for the other processes; it
// never blocks, and drops it when too many wait (it is a hint, and the
// other processes' retries come anyway).
func (sg *signals) publish(serviceID string) {
	select {
	case sg.ups <- serviceID:
	default:
	}
}

// run watches the Notifier and publishes ServiceUp calls until stopping
// closes or ctx ends.
func (sg *signals) run(ctx context.Context, stopping <-chan struct{}) {
	wctx, cancel := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { sg.watch(wctx) })
	defer func() {
		cancel()
		watching.Wait()
	}()
	for {
		select {
		case <-stopping:
			return
		case <-ctx.Done():
			return
		case id := <-sg.ups:
			pctx, cancelPublish := context.WithTimeout(ctx, publishTimeout)
			if err := sg.notifier.ServiceUp(pctx, id); err != nil {
				sg.log.Warn("error telling other processes that the application service is up", "service", id, "error", err)
			}
			cancelPublish()
		}
	}
}

// watch receives signals until ctx ends, watching again after an error.
func (sg *signals) watch(ctx context.Context) {
	for {
		err := sg.notifier.Watch(ctx, sg.receive)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, store.ErrClosed) {
			sg.log.Error("the store was closed while the scheduler runs; no more signals from other processes")
			return
		}
		sg.log.Warn("error watching for other processes' signals; polling meanwhile", "error", err)
		t := sg.clock.NewTimer(sg.pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// receive acts on one signal; it never blocks.
func (sg *signals) receive(sig store.Signal) {
	d := sg.deliverer(sig.Service)
	if d == nil {
		return
	}
	switch sig.Kind {
	case store.SignalWork:
		d.workElsewhere()
	case store.SignalServiceUp:
		d.serviceUp()
	}
}
