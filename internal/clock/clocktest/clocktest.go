// Package clocktest provides a clock that tests move by hand.
package clocktest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/internal/clock"
)

// Fake is a clock.Clock whose time moves only when Advance is called. It
// is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer  // pending, unordered
	changed chan struct{} // closed (and replaced) when a timer is made
}

var _ clock.Clock = (*Fake)(nil)

// New returns a fake clock that reads start.
func New(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once the fake time has moved d past
// now; at once for d <= 0.
func (f *Fake) NewTimer(d time.Duration) clock.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, at: f.now.Add(d), d: d, c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	close(f.changed)
	f.changed = make(chan struct{})
	return t
}

// Advance moves the time d forward and fires every timer due by then.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.at.After(f.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- f.now
	}
	clear(f.timers[len(kept):])
	f.timers = kept
}

// Pending returns the durations the pending timers were made with, in the
// order they fire.
func (f *Fake) Pending() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	ts := append([]*fakeTimer(nil), f.timers...)
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].at.Before(ts[j].at) })
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.d
	}
	return out
}

// AdvanceToNext moves the time to the earliest pending timer and fires
// it (and any other due then). It returns how far the time moved, and
// false when no timer is pending.
func (f *Fake) AdvanceToNext() (time.Duration, bool) {
	f.mu.Lock()
	if len(f.timers) == 0 {
		f.mu.Unlock()
		return 0, false
	}
	next := f.timers[0].at
	for _, t := range f.timers[1:] {
		if t.at.Before(next) {
			next = t.at
		}
	}
	step := next.Sub(f.now)
	f.mu.Unlock()
	f.Advance(step)
	return step, true
}

// WaitForTimers blocks until at least n timers are pending, or ctx ends
// (then it returns ctx.Err()).
func (f *Fake) WaitForTimers(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		pending, changed := len(f.timers), f.changed
		f.mu.Unlock()
		if pending >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

type fakeTimer struct {
	f  *Fake
	at time.Time
	d  time.Duration
	c  chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, p := range t.f.timers {
		if p == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			return true
		}
	}
	return false
}
