package scheduler

import (
	"context"
	"sync"

	"github.com/asdeliver/scheduler/internal/lifecycle"
	"github.com/asdeliver/scheduler/store"
)

// eventPool is the hand-off between Enqueue and the Store: it admits calls
// while it has room (bounded in events and bytes, so a Store that cannot
// keep up pushes back on the producers) and commits every admitted call
// waiting at that moment with one Store.Append: group commit, with up to
// commitsInFlight such commits under way at once. Admission is
// the point of no return: an admitted call is committed even during Stop,
// and its caller gets the real outcome.
type eventPool struct {
	store     store.Store
	maxEvents int
	maxBytes  int
	// committed is told, per service, the items of every successful
	// commit; woken says the services were already woken when the store
	// ordered the call (see store.OrderedAppender).
	committed func(queued map[string]int, woken bool)
	// ordered wakes the services of a call once the store has ordered it,
	// before its commit: a transaction they form from then on can share
	// the commit of the items.
	ordered func(queued map[string]int)

	mu      sync.Mutex
	events  int           // events admitted and not yet committed
	bytes   int           // their bytes
	room    chan struct{} // closed (and replaced) when room frees up
	pending []*poolCall   // admitted, not yet taken by the committer
	closed  bool
	kick    chan struct{} // capacity 1: there is pending work
}

// poolCall is one admitted Enqueue call.
type poolCall struct {
	entries []store.Entry
	events  int
	bytes   int
	done    chan error // receives the commit's outcome, once
}

func newEventPool(st store.Store, maxEvents, maxBytes int, ordered func(map[string]int), committed func(map[string]int, bool)) *eventPool {
	return &eventPool{
		store:     st,
		maxEvents: maxEvents,
		maxBytes:  maxBytes,
		ordered:   ordered,
		committed: committed,
		room:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
	}
}

// admit waits until the pool has room for c, then queues it for the
// committer. ctx bounds only this wait; once admit returns nil the call will
// be committed and c.done will receive the outcome. It returns ErrStopped
// once the pool is closed.
func (p *eventPool) admit(ctx context.Context, c *poolCall) error {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return ErrStopped
		}
		// An empty pool admits any call that passed the size checks in
		// Enqueue, so a call can never wait forever behind its own size.
		if p.events == 0 || (p.events+c.events <= p.maxEvents && p.bytes+c.bytes <= p.maxBytes) {
			break
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-room:
		}
		p.mu.Lock()
	}
	p.events += c.events
	p.bytes += c.bytes
	p.pending = append(p.pending, c)
	p.mu.Unlock()
	p.signal()
	return nil
}

func (p *eventPool) signal() {
	lifecycle.Poke(p.kick)
}

// close refuses new and waiting calls with ErrStopped; calls already
// admitted are still committed by run, which then returns.
func (p *eventPool) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.room) // wake the waiters so they see closed
	}
	p.mu.Unlock()
}

// defaultCommitsInFlight is how many Store.Append calls the committer
// keeps in flight at once unless the store says otherwise
// (store.AppendConcurrency). A store that pipelines its commits (the
// SQLite store writes the next transaction while the last one syncs) then
// has the next batch at hand; the calls a commit holds wait for that
// commit alone. Calls of different commits in flight overlap in time, so
// any order between them is an order the Enqueue contract allows.
const defaultCommitsInFlight = 4

// commitsInFlight returns how many Appends to keep in flight on st.
func commitsInFlight(st store.Store) int {
	if c, ok := st.(store.AppendConcurrency); ok {
		return max(c.AppendsInFlight(), 1)
	}
	return defaultCommitsInFlight
}

// run is the committer: it commits admitted calls, every call waiting at
// the moment a commit slot frees up in one Store.Append. Once stopping
// closes it closes the pool, commits what was admitted before, waits for
// the commits in flight and returns. ctx's end does not cut a commit
// short: a begun commit always finishes, and its caller gets its outcome.
func (p *eventPool) run(ctx context.Context, stopping <-chan struct{}) {
	ctx = context.WithoutCancel(ctx)
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	slots := make(chan struct{}, commitsInFlight(p.store))
	for {
		select {
		case <-p.kick:
		case <-stopping:
			p.close() // the loop below drains the pool, then returns
		}
		for {
			slots <- struct{}{}
			p.mu.Lock()
			calls := p.pending
			p.pending = nil
			closed := p.closed
			p.mu.Unlock()
			if len(calls) == 0 {
				<-slots
				if closed {
					return
				}
				break
			}
			inFlight.Go(func() {
				p.commit(ctx, calls)
				<-slots
			})
		}
	}
}

// commit appends the entries of calls in one Store.Append, so they succeed
// or fail together, then releases their room and reports to each caller.
// With a store that orders its calls, the services are woken as soon as the
// call is ordered: an idle service then forms its transaction in the same
// commit as the items, so one commit, not two, precedes the PUT.
func (p *eventPool) commit(ctx context.Context, calls []*poolCall) {
	var entries []store.Entry
	if len(calls) == 1 {
		entries = calls[0].entries
	} else {
		n := 0
		for _, c := range calls {
			n += len(c.entries)
		}
		entries = make([]store.Entry, 0, n)
		for _, c := range calls {
			entries = append(entries, c.entries...)
		}
	}
	counts := countPerService(entries)
	var err error
	woken := false
	if oa, ok := p.store.(store.OrderedAppender); ok {
		err = oa.AppendOrdered(ctx, entries, func() {
			woken = true
			p.ordered(counts)
		})
	} else {
		err = p.store.Append(ctx, entries)
	}

	events, bytes := 0, 0
	for _, c := range calls {
		events += c.events
		bytes += c.bytes
	}
	p.mu.Lock()
	p.events -= events
	p.bytes -= bytes
	if !p.closed {
		close(p.room)
		p.room = make(chan struct{})
	}
	p.mu.Unlock()

	if err == nil {
		p.committed(counts, woken)
	}
	for _, c := range calls {
		c.done <- err
	}
}

// countPerService counts the entries queued for each service.
func countPerService(entries []store.Entry) map[string]int {
	counts := make(map[string]int, 4)
	for _, e := range entries {
		for _, s := range e.Services {
			counts[s]++
		}
	}
	return counts
}
