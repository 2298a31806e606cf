package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// Per-transaction limits of what a transaction carries beyond room events
// (Config.MaxEventsPerTxn bounds those). Synapse sends at most 100
// ephemeral events and 100 to-device messages per transaction; the rest
// leaves at once in the following transactions. Config.MaxTxnBytes bounds
// all of it together.
const (
	// MaxEphemeralPerTxn is the most ephemeral events in one transaction.
	MaxEphemeralPerTxn = 100
	// MaxToDevicePerTxn is the most to-device messages in one transaction.
	MaxToDevicePerTxn = 100
	// MaxDeviceListsPerTxn is the most EnqueueDeviceLists summaries merged
	// into one transaction's device lists.
	MaxDeviceListsPerTxn = 100
	// MaxKeyCountsPerTxn is the most DeviceKeyCounts (one device each)
	// merged into one transaction.
	MaxKeyCountsPerTxn = 1000
)

// txnLimits returns the limits of every transaction the scheduler forms
// under cfg (whose defaults are filled).
func txnLimits(cfg Config) store.Limits {
	return store.Limits{
		MaxItems: cfg.MaxEventsPerTxn,
		MaxItemsByKind: map[store.Kind]int{
			store.KindEvent:       cfg.MaxEventsPerTxn,
			store.KindEphemeral:   MaxEphemeralPerTxn,
			store.KindToDevice:    MaxToDevicePerTxn,
			store.KindDeviceLists: MaxDeviceListsPerTxn,
			store.KindKeyCounts:   MaxKeyCountsPerTxn,
		},
		MaxBytes: cfg.MaxTxnBytes,
	}
}

// bodyFlags returns the body keys r opted in to, as Synapse's push_bulk
// reads the registration: receive_ephemeral puts ephemeral events under
// "ephemeral", de.sorunome.msc2409.push_ephemeral under
// "de.sorunome.msc2409.ephemeral", either of them brings to-device
// messages, and org.matrix.msc3202 the MSC3202 device data.
func bodyFlags(r *Registration) wire.Flags {
	var f wire.Flags
	if r.ReceiveEphemeral {
		f |= wire.EphemeralStable
	}
	if r.PushEphemeral {
		f |= wire.EphemeralUnstable
	}
	if r.ReceiveEphemeral || r.PushEphemeral {
		f |= wire.ToDevice
	}
	if r.MSC3202 {
		f |= wire.DeviceData
	}
	return f
}

// isUserID reports whether s looks like a Matrix user ID: '@', a
// localpart, ':', a server name, in valid UTF-8. It checks no more: user
// IDs of other servers follow their rules.
func isUserID(s string) bool {
	i := strings.IndexByte(s, ':')
	return len(s) >= 4 && s[0] == '@' && i > 1 && i < len(s)-1 && utf8.ValidString(s)
}

// accepting returns nil while the scheduler takes new work, else
// ErrNotStarted or ErrStopped.
func (s *Scheduler) accepting() error {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	switch state {
	case stateNew:
		return ErrNotStarted
	case stateStopped:
		return ErrStopped
	}
	return nil
}

// checkCallSize returns ErrBatchTooLarge for a call of n items, or of size
// bytes, that the pool could never admit.
func (s *Scheduler) checkCallSize(n, size int, what string) error {
	if n > s.cfg.MaxPoolEvents {
		return fmt.Errorf("%w: %d %s, at most %d (Config.MaxPoolEvents) per call", ErrBatchTooLarge, n, what, s.cfg.MaxPoolEvents)
	}
	if size > s.cfg.MaxPoolBytes {
		return fmt.Errorf("%w: %d bytes of %s, at most %d (Config.MaxPoolBytes) per call", ErrBatchTooLarge, size, what, s.cfg.MaxPoolBytes)
	}
	return nil
}

// submit commits entries through the EventPool, as one call: it returns
// once they are durable, or with the reason they are not. ctx bounds only
// the wait for room in the pool. No entries is a no-op.
func (s *Scheduler) submit(ctx context.Context, entries []store.Entry, what string) error {
	if len(entries) == 0 {
		return nil
	}
	call := &poolCall{entries: entries, events: len(entries), done: make(chan error, 1)}
	for i := range entries {
		call.bytes += len(entries[i].Data)
	}
	if err := s.checkCallSize(call.events, call.bytes, what); err != nil {
		return err
	}
	if err := s.pool.admit(ctx, call); err != nil {
		return err
	}
	if err := <-call.done; err != nil {
		return fmt.Errorf("error storing %s: %w", what, err)
	}
	return nil
}

// A batch is what one Enqueue method call hands over, as the intake path
// takes it: each method says how to validate its kind of input and who
// wants it, and intake does the rest, the same way for all.
type batch struct {
	what    string // what is stored, for errors: "events"
	counted string // what n counts, for errors, if not what
	n       int    // how many items the call has; none is a no-op
	checks  poolChecks
	// validate checks the input and returns the bytes of its items.
	validate func() (int, error)
	// route decides which services want what, and returns what to store.
	route func(context.Context, *interest.Rooms) ([]store.Entry, error)
}

// poolChecks says when intake checks a call against the pool's bounds
// (Config.MaxPoolEvents and MaxPoolBytes, ErrBatchTooLarge) before submit
// checks what is stored. Each Enqueue method kept the checks, and their
// order, that it had before they shared this path.
type poolChecks uint8

const (
	// countFirst checks the item count before validating, sparing the
	// work for a call the pool could never admit.
	countFirst poolChecks = 1 << iota
	// allAfter checks the item count and the bytes of every item, wanted
	// or not, after validating.
	allAfter
)

// intake is the path of every Enqueue method. It checks, in this order,
// each failing the call: that the scheduler takes work (ErrNotStarted,
// ErrStopped; then a call of nothing is a no-op), the call's size as
// b.checks says, the input (b.validate: the kind's error for an invalid
// item or one no transaction could carry), the call's size again as
// b.checks says; then it decides interest (b.route; an error of
// Config.Rooms) and hands what is wanted to commit as one call: submit,
// or the caller's transaction for EnqueueTx.
func (s *Scheduler) intake(ctx context.Context, b batch, commit commitFunc) error {
	if err := s.accepting(); err != nil {
		return err
	}
	if b.n == 0 {
		return nil
	}
	counted := cmp.Or(b.counted, b.what)
	if b.checks&countFirst != 0 {
		if err := s.checkCallSize(b.n, 0, counted); err != nil {
			return err
		}
	}
	size, err := b.validate()
	if err != nil {
		return err
	}
	if b.checks&allAfter != 0 {
		if err := s.checkCallSize(b.n, size, counted); err != nil {
			return err
		}
	}
	entries, err := b.route(ctx, s.sorter().lookups())
	if err != nil {
		return err
	}
	return commit(ctx, s.capQueues(entries), b.what)
}

// capQueues removes from entries the services that are DOWN with a full
// queue (Config.MaxQueuedPerService), counting what each misses, and then the
// entries no service wants any more; it logs when a queue fills and when
// it has room again. It may reuse entries' memory.
func (s *Scheduler) capQueues(entries []store.Entry) []store.Entry {
	limit := int64(s.cfg.MaxQueuedPerService)
	if limit == 0 {
		return entries
	}
	adds := make(map[string]int64) // what this call queues per service so far
	full := func(id string) bool {
		d := s.deliverer(id)
		if d == nil {
			return false // not configured: nothing routes to it
		}
		if d.queued.Load()+adds[id] < limit || !d.isDown() {
			if d.dropping.CompareAndSwap(true, false) {
				s.log.Info("the service's queue has room again: new items are queued for it",
					"service", id, "dropped since start", d.dropped.Load())
			}
			adds[id]++
			return false
		}
		d.dropped.Add(1)
		if d.dropping.CompareAndSwap(false, true) {
			s.log.Warn("the service's queue is full (Config.MaxQueuedPerService): new items for it are dropped "+
				"until it drains; other services still get them", "service", id, "limit", limit)
		}
		return true
	}
	kept := entries[:0]
	for _, e := range entries {
		var wanted []string // made at the first drop: entries may share Services
		for i, id := range e.Services {
			switch {
			case full(id):
				if wanted == nil {
					wanted = append(make([]string, 0, len(e.Services)), e.Services[:i]...)
				}
			case wanted != nil:
				wanted = append(wanted, id)
			}
		}
		if wanted != nil {
			e.Services = wanted
		}
		if len(e.Services) > 0 {
			kept = append(kept, e)
		}
	}
	return kept
}

// A commitFunc makes entries durable, as one call, or returns why not;
// what names them for errors. No entries is a no-op.
type commitFunc func(ctx context.Context, entries []store.Entry, what string) error

// item is an input of the Enqueue methods that take a list: each one is
// validated, and stored, on its own.
type item interface {
	// validate checks the item, the index-th of its call, failing with
	// its kind's error.
	validate(index int) error
	// stored returns the valid item as stored, or why no transaction of
	// maxBytes could carry it.
	stored(index, maxBytes int) (store.Item, error)
	// wants returns the IDs of the services that want the item, appending
	// to dst.
	wants(ctx context.Context, es *eventSorter, rooms *interest.Rooms, index int, dst []string) ([]string, error)
}

// listBatch returns the batch of a call of items.
func listBatch[T any, P interface {
	*T
	item
}](s *Scheduler, what string, checks poolChecks, items []T) batch {
	var entries []store.Entry
	return batch{
		what: what, n: len(items), checks: checks,
		validate: func() (int, error) {
			entries = make([]store.Entry, len(items))
			size := 0
			for i := range items {
				it := P(&items[i])
				if err := it.validate(i); err != nil {
					return 0, err
				}
				var err error
				if entries[i].Item, err = it.stored(i, s.cfg.MaxTxnBytes); err != nil {
					return 0, err
				}
				size += len(entries[i].Data)
			}
			return size, nil
		},
		route: func(ctx context.Context, rooms *interest.Rooms) ([]store.Entry, error) {
			wanted := entries[:0] // in place: entry i moves to at most i
			var ids []string
			for i, e := range entries {
				var err error
				if ids, err = P(&items[i]).wants(ctx, s.sorter(), rooms, i, ids[:0]); err != nil {
					return nil, err
				}
				if len(ids) > 0 {
					e.Services = slices.Clone(ids)
					wanted = append(wanted, e)
				}
			}
			return wanted, nil
		},
	}
}

// checkItemSize returns an *InvalidInputError of kind for an item of size
// bytes that no transaction of maxBytes could carry.
func checkItemSize(kind error, index, size, maxBytes int) error {
	if size > maxBytes {
		return &InvalidInputError{Err: kind, Index: index,
			Reason: fmt.Sprintf("%d bytes, more than Config.MaxTxnBytes (%d)", size, maxBytes)}
	}
	return nil
}

// EnqueueEphemeral hands ephemeral events (typing notifications, read
// receipts, presence updates) to the scheduler and returns once they are
// durable in the Store for every service that wants them, with the
// guarantees of Enqueue: the whole call or nothing, ctx bounding only the
// wait for room in the pool, ErrNotStarted before Start and ErrStopped
// once Stop has begun, ErrBatchTooLarge for a call the pool could never
// admit. Like events, they are retried until delivered, in enqueue order
// with the events and everything else owed to a service, at most
// MaxEphemeralPerTxn per transaction.
//
// A service receives them if it opted in (receive_ephemeral or
// de.sorunome.msc2409.push_ephemeral; both keys carry the same events when
// both are set), and, as Synapse decides: a typing notification or read
// receipt if it is interested in the room (rooms namespace, or through
// Config.Rooms a local alias or local member of the room), a presence
// update if it is interested in the user (users namespace or own user) or,
// through UserRooms, in a room the user is joined to. A service with url:
// null receives nothing.
//
// Every typing notification is delivered, also one that a later one for
// the same room supersedes; none is deduplicated. An invalid event fails
// the call with an *InvalidInputError (ErrInvalidEphemeral), as does one
// larger than Config.MaxTxnBytes.
func (s *Scheduler) EnqueueEphemeral(ctx context.Context, events ...EphemeralEvent) error {
	return s.intake(ctx, listBatch(s, "ephemeral events", allAfter, events), s.submit)
}

// EnqueueToDevice hands to-device messages to the scheduler and returns
// once they are durable in the Store for every service that wants them,
// with the guarantees of Enqueue (see EnqueueEphemeral), at most
// MaxToDevicePerTxn per transaction.
//
// A message goes to every service that opted in to ephemeral events
// (receive_ephemeral or de.sorunome.msc2409.push_ephemeral, as Synapse
// requires) and is interested in the recipient: its users namespace,
// exclusive or not, holds ToUserID, or ToUserID is its own user. A service
// with url: null receives nothing. A message with a MessageID still
// pending for a service is not queued twice for it.
//
// An invalid message fails the call with an *InvalidInputError
// (ErrInvalidToDevice), as does one whose encoded form is larger than
// Config.MaxTxnBytes.
func (s *Scheduler) EnqueueToDevice(ctx context.Context, msgs ...ToDeviceMessage) error {
	return s.intake(ctx, listBatch(s, "to-device messages", countFirst, msgs), s.submit)
}

// EnqueueDeviceLists hands one summary of device-list changes to the
// scheduler and returns once it is durable in the Store for every service
// that wants part of it, with the guarantees of Enqueue (see
// EnqueueEphemeral). Each service that opted in to MSC3202 receives the
// users it is interested in (see DeviceListChanges); a service with url:
// null receives nothing. Summaries are merged per transaction, at most
// MaxDeviceListsPerTxn of them (a summary too large for
// Config.MaxTxnBytes is stored in parts, which merge to the same).
//
// Invalid changes fail the call with an *InvalidInputError
// (ErrInvalidDeviceLists); changes with no user are a no-op.
func (s *Scheduler) EnqueueDeviceLists(ctx context.Context, changes DeviceListChanges) error {
	return s.intake(ctx, s.deviceListBatch(changes), s.submit)
}

// EnqueueDeviceKeyCounts hands the key counts of devices to the scheduler
// and returns once they are durable in the Store for every service that
// wants them, with the guarantees of Enqueue (see EnqueueEphemeral). The
// counts of a device go to every service that opted in to MSC3202 and is
// interested in its user (users namespace, exclusive or not, or own user);
// a service with url: null receives nothing. They are merged per
// transaction, at most MaxKeyCountsPerTxn of them (see DeviceKeyCounts).
//
// Invalid counts fail the call with an *InvalidInputError
// (ErrInvalidKeyCounts).
func (s *Scheduler) EnqueueDeviceKeyCounts(ctx context.Context, counts ...DeviceKeyCounts) error {
	return s.intake(ctx, listBatch(s, "device key counts", countFirst, counts), s.submit)
}
