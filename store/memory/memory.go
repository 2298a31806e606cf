// Package memory is an in-memory store.Store, for tests and throwaway use.
//
// It loses everything when the process exits: queued items, stored
// transactions and leases live only in the process's memory. Use it where
// nothing needs to survive a restart; use store/sqlite otherwise.
//
// Transaction IDs still never repeat across process runs: each one is at
// least the wall clock in microseconds at the moment it is allocated, and
// greater than the previous one for its service. An application service that
// remembers the IDs it has seen therefore never mistakes a transaction of a
// new run for a replay, as long as the clock does not go backwards between
// runs.
package memory

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// Store is an in-memory store.Store. Its zero value is not usable: create
// one with New. It is safe for concurrent use; one mutex guards all state.
//
// The Data of the items it returns (from NextTxn and Txns) is the store's own
// copy, shared with every later caller: callers must not modify it. Append
// copies the Data it is given, so a caller may reuse its buffers at once.
type Store struct {
	now func() time.Time // leases and timestamps; see NewWithClock

	mu       sync.Mutex
	closed   bool
	lastSeq  int64
	services map[string]*service
}

var _ store.Store = (*Store)(nil)

// item is one stored item. Queues and transactions of every service that
// wants it point to the same item, so its bytes are held once; it is freed
// when no queue or transaction refers to it any more.
type item struct {
	store.Item
	appended time.Time
}

// dedupKey is what Append deduplicates on within one service.
type dedupKey struct {
	kind store.Kind
	key  string
}

// txn is a stored transaction of one service.
type txn struct {
	id      int64
	format  int
	hash    []byte
	items   []*item
	created time.Time
}

// lease is the lease state of one service. epoch is the current grant, zero
// when the lease was never granted or has been released; last is the
// highest epoch ever granted, so that epochs are never reused.
type lease struct {
	owner   string
	epoch   store.Epoch
	expires time.Time
	last    store.Epoch
}

// service is everything the store keeps for one service ID. It is created
// on first use and never removed, so that its last transaction ID and last
// epoch survive Complete and Purge.
type service struct {
	// queue[head:] are the queued items not yet bound to a transaction, in
	// Seq order. Entries before head are nil.
	queue []*item
	head  int
	// txns are the stored transactions, in ID order.
	txns []*txn
	// pending holds the dedup keys of items queued or bound to a stored
	// transaction. Items with an empty Key are never in it.
	pending map[dedupKey]struct{}
	lastID  int64
	lease   lease
}

// New returns an empty store.
func New() *Store { return NewWithClock(time.Now) }

// NewWithClock returns an empty store that reads the time from now: when
// leases expire, and the times Backlog.Oldest and Txn.Created report. Tests
// pass a fake clock, the scheduler's own, to drive leases without waiting.
// Transaction IDs keep their floor on the wall clock, which only keeps them
// from repeating across process runs.
func NewWithClock(now func() time.Time) *Store {
	return &Store{now: now, services: make(map[string]*service)}
}

// Close discards the store's contents. Every later call of a store method
// returns store.ErrClosed; Close itself may be called again and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.services = nil
	return nil
}

// ctxErr returns ctx's error, if ctx is done, wrapped with op.
func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %s: %w", op, err)
	}
	return nil
}

// lock returns with s.mu held, unless the store is closed.
func (s *Store) lock(op string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memory: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// service returns the state of name, creating it if needed. s.mu must be
// held.
func (s *Store) service(name string) *service {
	sv := s.services[name]
	if sv == nil {
		sv = &service{pending: make(map[dedupKey]struct{})}
		s.services[name] = sv
	}
	return sv
}

// currentEpoch reports whether epoch is the current lease epoch of the
// service name. s.mu must be held.
func (s *Store) currentEpoch(name string, epoch store.Epoch) bool {
	sv := s.services[name]
	return sv != nil && sv.lease.epoch != 0 && sv.lease.epoch == epoch
}

// lockHolder returns with s.mu held and the state of service, unless the
// store is closed or epoch is not the service's current lease epoch: the
// common entry of every call that only a lease holder may make.
func (s *Store) lockHolder(op, service string, epoch store.Epoch) (*service, error) {
	if err := s.lock(op); err != nil {
		return nil, err
	}
	if !s.currentEpoch(service, epoch) {
		s.mu.Unlock()
		return nil, stale(op, service, epoch)
	}
	return s.services[service], nil
}

// enterHolder is lockHolder for a method whose only other checks are ctx
// and a named service, made in that order.
func (s *Store) enterHolder(ctx context.Context, op, service string, epoch store.Epoch) (*service, error) {
	if err := ctxErr(ctx, op); err != nil {
		return nil, err
	}
	if service == "" {
		return nil, invalid(op, "empty service ID")
	}
	return s.lockHolder(op, service, epoch)
}

// invalid returns an error matching store.ErrInvalid that says why.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("memory: %s: %s: %w", op, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// stale returns an error matching store.ErrStaleEpoch.
func stale(op, service string, epoch store.Epoch) error {
	return fmt.Errorf("memory: %s: service %q, epoch %d: %w", op, service, epoch, store.ErrStaleEpoch)
}

// Append stores the entries, as store.Store documents. It validates every
// entry before it changes anything, so an invalid entry stores nothing. The
// Seq field of the entries is ignored; a service listed twice in one entry
// is queued once.
func (s *Store) Append(ctx context.Context, entries []store.Entry) error {
	const op = "appending entries"
	if err := ctxErr(ctx, op); err != nil {
		return err
	}
	for i, e := range entries {
		if len(e.Services) == 0 {
			return invalid(op, "entry %d has no services: list at least one", i)
		}
		if slices.Contains(e.Services, "") {
			return invalid(op, "entry %d lists an empty service ID", i)
		}
		if len(e.Data) == 0 {
			return invalid(op, "entry %d has no data", i)
		}
	}
	if err := s.lock(op); err != nil {
		return err
	}
	defer s.mu.Unlock()

	now := s.now()
	var wanted []*service
	for _, e := range entries {
		wanted = wanted[:0]
		for j, name := range e.Services {
			if slices.Contains(e.Services[:j], name) {
				continue
			}
			sv := s.service(name)
			if e.Key != "" {
				k := dedupKey{e.Kind, e.Key}
				if _, dup := sv.pending[k]; dup {
					continue
				}
				sv.pending[k] = struct{}{}
			}
			wanted = append(wanted, sv)
		}
		if len(wanted) == 0 {
			continue
		}
		s.lastSeq++
		it := &item{
			Item: store.Item{
				Seq:  s.lastSeq,
				Kind: e.Kind,
				Key:  e.Key,
				Data: bytes.Clone(e.Data),
			},
			appended: now,
		}
		for _, sv := range wanted {
			sv.queue = append(sv.queue, it)
		}
	}
	return nil
}

// Claim grants owner the lease on service, as store.Store documents. A claim
// by the holder after its lease expired counts as a new grant and gets a new
// epoch, as does a claim after Release.
func (s *Store) Claim(ctx context.Context, service, owner string, ttl time.Duration) (store.Epoch, error) {
	const op = "claiming lease"
	if err := ctxErr(ctx, op); err != nil {
		return 0, err
	}
	if service == "" {
		return 0, invalid(op, "empty service ID")
	}
	if owner == "" {
		return 0, invalid(op, "empty owner")
	}
	if ttl <= 0 {
		return 0, invalid(op, "ttl %v is not positive", ttl)
	}
	if err := s.lock(op); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()

	now := s.now()
	l := &s.service(service).lease
	if l.epoch != 0 && now.Before(l.expires) {
		if l.owner != owner {
			return 0, fmt.Errorf("memory: %s: service %q: %w", op, service, store.ErrLeaseHeld)
		}
		l.expires = now.Add(ttl)
		return l.epoch, nil
	}
	l.last++
	l.owner, l.epoch, l.expires = owner, l.last, now.Add(ttl)
	return l.epoch, nil
}

// Release frees the lease on service, as store.Store documents. An epoch
// whose lease expired is still current until another owner claims the
// service, so its holder may release it.
func (s *Store) Release(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "releasing lease"
	sv, err := s.enterHolder(ctx, op, service, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	l := &sv.lease
	l.owner, l.epoch, l.expires = "", 0, time.Time{}
	return nil
}

// NextTxn forms the next transaction of service, as store.Store documents.
// An epoch whose lease expired stays current until another owner claims the
// service.
func (s *Store) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	const op = "forming transaction"
	if err := ctxErr(ctx, op); err != nil {
		return nil, err
	}
	if service == "" {
		return nil, invalid(op, "empty service ID")
	}
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("memory: %s: %w", op, err)
	}
	sv, err := s.lockHolder(op, service, epoch)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	queued := sv.queue[sv.head:]
	if len(queued) == 0 {
		return nil, nil
	}
	// Take items in order until the first that does not fit: never skip
	// one, so that a transaction is a contiguous run of the queue.
	fit := lim.NewFit()
	for _, it := range queued {
		if !fit.Take(it.Kind, len(it.Data)) {
			break
		}
	}
	n := fit.Len()
	now := s.now()
	t := &txn{
		// The wall clock's floor keeps IDs from repeating across process runs.
		id:      max(sv.lastID+1, time.Now().UnixMicro()),
		format:  format,
		items:   slices.Clone(queued[:n]),
		created: now,
	}
	clear(queued[:n])
	sv.head += n
	sv.compact()
	t.hash = store.HashItems(plain(t.items))
	sv.lastID = t.id
	sv.txns = append(sv.txns, t)

	out := t.export(service)
	return &out, nil
}

// compact drops the consumed front of the queue once it makes up at least
// half of it, so that memory follows the backlog and each queued item is
// moved a bounded number of times on average.
func (sv *service) compact() {
	if sv.head == 0 || sv.head < len(sv.queue)/2 {
		return
	}
	n := copy(sv.queue, sv.queue[sv.head:])
	clear(sv.queue[n:])
	sv.queue = sv.queue[:n]
	sv.head = 0
	// Give a large, mostly empty array back to the garbage collector.
	if cap(sv.queue) > 1024 && cap(sv.queue) > 4*n {
		sv.queue = slices.Clip(slices.Clone(sv.queue))
	}
}

// plain returns the store.Item of each item, in a fresh slice. Their Data is
// shared with the store.
func plain(items []*item) []store.Item {
	out := make([]store.Item, len(items))
	for i, it := range items {
		out[i] = it.Item
	}
	return out
}

// export returns t as a store.Txn with a fresh Items slice and Hash. The
// items' Data is shared with the store.
func (t *txn) export(service string) store.Txn {
	return store.Txn{
		Service: service,
		ID:      t.id,
		Format:  t.format,
		Hash:    bytes.Clone(t.hash),
		Items:   plain(t.items),
		Created: t.created,
	}
}

// Txns lists stored transactions of service, as store.Store documents.
func (s *Store) Txns(ctx context.Context, service string, limit int) ([]store.Txn, error) {
	const op = "listing transactions"
	if err := ctxErr(ctx, op); err != nil {
		return nil, err
	}
	if service == "" {
		return nil, invalid(op, "empty service ID")
	}
	if err := s.lock(op); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()

	sv := s.services[service]
	if sv == nil {
		return nil, nil
	}
	txns := sv.txns
	if limit > 0 && limit < len(txns) {
		txns = txns[:limit]
	}
	out := make([]store.Txn, len(txns))
	for i, t := range txns {
		out[i] = t.export(service)
	}
	return out, nil
}

// Complete deletes a stored transaction, as store.Store documents.
func (s *Store) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	const op = "completing transaction"
	sv, err := s.enterHolder(ctx, op, service, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(sv.txns, id, func(t *txn, id int64) int {
		return cmp.Compare(t.id, id)
	})
	if !found {
		return nil
	}
	for _, it := range sv.txns[i].items {
		if it.Key != "" {
			delete(sv.pending, dedupKey{it.Kind, it.Key})
		}
	}
	sv.txns = slices.Delete(sv.txns, i, i+1)
	return nil
}

// Backlogs reports the services with pending work, as store.Store
// documents.
func (s *Store) Backlogs(ctx context.Context) ([]store.Backlog, error) {
	const op = "listing backlogs"
	if err := ctxErr(ctx, op); err != nil {
		return nil, err
	}
	if err := s.lock(op); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()

	var out []store.Backlog
	for name, sv := range s.services {
		b := store.Backlog{
			Service: name,
			Txns:    len(sv.txns),
			Queued:  len(sv.queue) - sv.head,
		}
		if b.Txns == 0 && b.Queued == 0 {
			continue
		}
		// Items are bound oldest first, so the oldest pending item heads
		// either the first stored transaction or the queue.
		if b.Txns > 0 {
			b.Oldest = sv.txns[0].items[0].appended
		}
		if b.Queued > 0 {
			if t := sv.queue[sv.head].appended; b.Oldest.IsZero() || t.Before(b.Oldest) {
				b.Oldest = t
			}
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b store.Backlog) int {
		return strings.Compare(a.Service, b.Service)
	})
	return out, nil
}

// Purge deletes everything pending for service, as store.Store documents.
// It keeps the service's lease.
func (s *Store) Purge(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "purging service"
	sv, err := s.enterHolder(ctx, op, service, epoch)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	sv.queue, sv.head, sv.txns = nil, 0, nil
	clear(sv.pending)
	return nil
}
