package sqlite

import (
	"slices"

	"github.com/asdeliver/scheduler/store"
)

// The writer keeps, for services whose queue it has seen empty, a copy of
// their queued items (those not bound to a transaction yet), so that
// NextTxn forms a transaction from memory instead of reading back the
// bytes Append has just written: that read was about a fifth of the
// writer's time under load. A service's copy is its tail.
//
// A tail is exact or absent. It starts when Append queues items for a
// service that had none queued, or when NextTxn binds every queued item of
// a service, and follows every change of the service's queue from then on.
// It is dropped when it would outgrow its share of memory (a backlog is
// read from the file, as before), when SQLite undoes calls that changed
// the tails (they would no longer match the file; this is rare, so all of
// them go), and when the service is purged. Calls change tails only once
// they have succeeded (writer.keep). NextTxn trusts a tail only while its
// length equals the service's queued count.

// Bounds of the tails: the memory of all of them together (see
// tailSize), and the items of one. A delivering service's tail holds what
// arrived during one PUT; a service that falls further behind is read
// from the file.
const (
	tailsMaxBytes = 16 << 20
	tailMaxItems  = 16384
)

// tails are the writer's tails, by service. They are owned by the writer
// goroutine: only the calls' work, which it runs, touches them.
type tails struct {
	m     map[string]*tail
	bytes int
	// maxBytes and maxItems are the bounds: tailsMaxBytes and
	// tailMaxItems, lower in tests.
	maxBytes, maxItems int
}

// tail is the queued items of one service, in seq order.
type tail struct {
	items []store.Item
	bytes int
}

func newTails() *tails {
	return &tails{m: make(map[string]*tail), maxBytes: tailsMaxBytes, maxItems: tailMaxItems}
}

// start records that service has nothing queued: its tail is known and
// empty.
func (t *tails) start(service string) {
	t.drop(service)
	t.m[service] = &tail{}
}

// add appends items, queued for service in seq order, to its tail, if
// known. A tail that would pass its bounds is dropped instead.
func (t *tails) add(service string, items []store.Item) {
	tl := t.m[service]
	if tl == nil {
		return
	}
	size := 0
	for _, it := range items {
		size += tailSize(it)
	}
	if len(tl.items)+len(items) > t.maxItems || t.bytes+size > t.maxBytes {
		t.drop(service)
		return
	}
	tl.items = append(tl.items, items...)
	tl.bytes += size
	t.bytes += size
}

// followTails adds the rows an Append queued to the tails of their
// services: emptied lists the services that had nothing queued before.
func (s *Store) followTails(plan *appendPlan, rows []queueRow, seqs []int64, emptied []string) {
	for _, svc := range emptied {
		s.w.tails.start(svc)
	}
	var tailed map[string][]store.Item // services whose tails take the rows
	for _, r := range rows {
		if _, known := s.w.tails.m[r.service]; !known {
			continue
		}
		if tailed == nil {
			tailed = make(map[string][]store.Item)
		}
		it := plan.copies[r.item]
		it.Seq = seqs[r.item]
		tailed[r.service] = append(tailed[r.service], it)
	}
	for svc, items := range tailed {
		s.w.tails.add(svc, items)
	}
}

// peek returns the oldest items of service's tail that fit lim, as
// readQueued would read them, if its tail is known and holds exactly
// queued items; ok is false otherwise, and the tail is dropped when it
// does not match (dropping one is always safe: the file is read instead).
func (t *tails) peek(service string, queued int64, lim store.Limits) (items []store.Item, ok bool) {
	tl := t.m[service]
	if tl == nil {
		return nil, false
	}
	if int64(len(tl.items)) != queued {
		t.drop(service)
		return nil, false
	}
	f := lim.NewFit()
	n := 0
	for n < len(tl.items) && f.Take(tl.items[n].Kind, len(tl.items[n].Data)) {
		n++
	}
	return slices.Clone(tl.items[:n]), true
}

// consume removes the oldest n items of service's tail: a transaction
// holds them now.
func (t *tails) consume(service string, n int) {
	tl := t.m[service]
	size := 0
	for _, it := range tl.items[:n] {
		size += tailSize(it)
	}
	clear(tl.items[:n])
	tl.items = tl.items[n:]
	if len(tl.items) == 0 {
		tl.items = nil
	}
	tl.bytes -= size
	t.bytes -= size
}

// tailSize is about what an item in a tail costs: its bytes, its key and
// the Item itself.
func tailSize(it store.Item) int {
	const itemSize = 64
	return len(it.Data) + len(it.Key) + itemSize
}

// drop forgets service's tail.
func (t *tails) drop(service string) {
	if tl, ok := t.m[service]; ok {
		t.bytes -= tl.bytes
		delete(t.m, service)
	}
}

// reset forgets every tail.
func (t *tails) reset() {
	clear(t.m)
	t.bytes = 0
}
