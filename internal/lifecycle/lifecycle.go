// Package lifecycle is the one start/stop idiom of the module: every type
// that runs goroutines owns a Group, starts them with Group.Go and ends
// them with Group.Stop.
//
// A stop has two phases, as net/http's Server.Shutdown and the Scheduler's
// Stop have them: first the goroutines are told to stop (Stopping closes)
// and finish what they have begun; if the caller's context ends before
// they all return, their run context is cancelled, which cuts short what
// is left (a PUT in flight, say), and Stop still waits for every one of
// them before it returns.
package lifecycle

import (
	"context"
	"sync"
)

// Group owns a set of goroutines. The zero value is not usable: create one
// with New.
type Group struct {
	ctx    context.Context // the run context every goroutine receives
	cancel context.CancelFunc

	mu       sync.Mutex
	stopped  bool
	stopping chan struct{} // closed when Stop begins
	wg       sync.WaitGroup
	done     chan struct{} // closed once Stop has begun and every goroutine has returned
}

// New returns a Group whose goroutines receive a run context that carries
// parent's values but not its end: only Stop ends it.
func New(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &Group{ctx: ctx, cancel: cancel, stopping: make(chan struct{}), done: make(chan struct{})}
}

// Go runs f in a new goroutine of the group, with the group's run context.
// f must return soon after Stopping closes, and at once when its context
// ends. Once Stop has begun, Go starts nothing and returns false.
func (g *Group) Go(f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Go(func() { f(g.ctx) })
	return true
}

// Stopping returns a channel that is closed when Stop begins: the group's
// goroutines finish what they have begun and start nothing new.
func (g *Group) Stopping() <-chan struct{} { return g.stopping }

// IsStopping reports whether Stop has begun.
func (g *Group) IsStopping() bool { return Closed(g.stopping) }

// Stop tells the group's goroutines to stop and waits for them. If ctx ends
// first, it cancels their run context, waits for them all the same, and
// returns ctx.Err(). It may be called any number of times, also
// concurrently: every call returns only once every goroutine has returned
// (or, with ctx.Err(), once its own ctx ended and the goroutines, cut
// short, returned).
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	if !g.stopped {
		g.stopped = true
		close(g.stopping)
		go func() {
			g.wg.Wait()
			g.cancel()
			close(g.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
	}
	g.cancel()
	<-g.done
	return ctx.Err()
}

// Poke sends on a wake-up channel without blocking: a channel with a
// buffer of one holds at most one pending wake-up, and a second poke
// before the receiver looks is one wake-up, not two.
func Poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Closed reports whether ch is closed (or holds a value), without
// blocking.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
