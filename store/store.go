// Package store defines the durable state of the asdeliver scheduler: per
// application service queues of items, the transactions formed from them, and
// a per-service lease that keeps one sender per service across processes.
//
// The package is a leaf: it imports the standard library only, so the
// scheduler, the store implementations and the conformance suite in
// store/storetest can all depend on it without cycles.
//
// Implementations: store/memory (tests and throwaway use), store/sqlite (the
// embedded default, one process), store/postgres (several processes on one
// database). A custom implementation proves itself with
// storetest.Run and storetest.RunReopen.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrStaleEpoch is returned by NextTxn, Complete, Purge and Release when the
// epoch passed is not the service's current lease epoch: another owner has
// claimed the service since, and the caller must stop sending for it.
var ErrStaleEpoch = errors.New("store: stale lease epoch")

// ErrLeaseHeld is returned by Claim when another owner holds an unexpired
// lease on the service.
var ErrLeaseHeld = errors.New("store: lease held by another owner")

// ErrClosed is returned by every method of a store that has been closed.
var ErrClosed = errors.New("store: closed")

// ErrInvalid is returned (wrapped, with the reason) for arguments that break
// a method's documented preconditions: an empty service name or owner, an
// item without data, an entry without services, non-positive limits or
// lease ttl.
var ErrInvalid = errors.New("store: invalid argument")

// Kind says what an item is. The scheduler assembles a transaction body by
// kind, and NextTxn counts items per kind (Limits.MaxItemsByKind); beyond
// that a store keeps the kind and returns it unchanged, whatever its value.
type Kind uint8

// The item kinds. Their numeric values are stored and must not change.
const (
	// KindEvent is a persistent room event (PDU) in client format.
	KindEvent Kind = 1
	// KindEphemeral is an ephemeral event (EDU) for the application
	// service: a typing notification, a read receipt or a presence update.
	KindEphemeral Kind = 2
	// KindToDevice is a to-device message for a device of a user the
	// application service is interested in.
	KindToDevice Kind = 3
	// KindDeviceLists is one summary of device-list changes: users whose
	// device lists changed, and users the service need no longer track.
	KindDeviceLists Kind = 4
	// KindKeyCounts is the one-time key counts and the unused fallback key
	// types of one device of one user.
	KindKeyCounts Kind = 5
)

// Item is one unit of content owed to a service: its bytes are written once,
// however many services want it.
type Item struct {
	// Seq orders items: assigned by the store on Append, increasing in commit
	// order. Zero in an Entry passed to Append.
	Seq int64
	// Kind says how the item goes into a transaction body.
	Kind Kind
	// Key identifies the item for deduplication (an event ID). While an item
	// with a Key is pending for a service (queued or bound to a stored
	// transaction), Append does not queue another item with the same Kind
	// and Key for that service.
	Key string
	// Data is the item's bytes, returned exactly as appended.
	Data []byte
}

// Entry is an item to append together with the services that want it.
type Entry struct {
	Item
	// Services lists the service IDs the item is queued for; at least one.
	Services []string
}

// Limits bound the transaction that NextTxn forms: how many items of each
// kind it may hold, and how many bytes in all. See NextTxn for how they are
// applied.
type Limits struct {
	// MaxItems is the most items of one kind a transaction may hold, for
	// every kind that MaxItemsByKind does not list; at least 1.
	MaxItems int
	// MaxItemsByKind overrides MaxItems for the kinds it lists: the most
	// items of that kind a transaction may hold. Every value is at least 1.
	// Nil means MaxItems applies to every kind.
	MaxItemsByKind map[Kind]int
	// MaxBytes is the most item bytes (sum of len(Data)) a transaction may
	// hold, except that the first item always fits.
	MaxBytes int
}

// MaxFor returns the most items of kind k a transaction may hold under lim:
// lim.MaxItemsByKind[k] if listed, else lim.MaxItems.
func (lim Limits) MaxFor(k Kind) int {
	if n, ok := lim.MaxItemsByKind[k]; ok {
		return n
	}
	return lim.MaxItems
}

// Validate checks the preconditions NextTxn states for lim: MaxItems,
// MaxBytes and every value of MaxItemsByKind at least 1. Its error wraps
// ErrInvalid and names the field at fault.
func (lim Limits) Validate() error {
	switch {
	case lim.MaxItems < 1:
		return fmt.Errorf("%w: Limits.MaxItems is %d: must be at least 1", ErrInvalid, lim.MaxItems)
	case lim.MaxBytes < 1:
		return fmt.Errorf("%w: Limits.MaxBytes is %d: must be at least 1", ErrInvalid, lim.MaxBytes)
	}
	for k, n := range lim.MaxItemsByKind {
		if n < 1 {
			return fmt.Errorf("%w: Limits.MaxItemsByKind[%d] is %d: must be at least 1", ErrInvalid, k, n)
		}
	}
	return nil
}

// Fit applies NextTxn's rule for what a transaction takes: items are
// offered in Seq order, the first always fits, and each later one fits
// while its kind has fewer than MaxFor(kind) items in the transaction and
// the total of Data stays within MaxBytes. A store offers the queued items
// one by one and stops at the first that does not fit, so a transaction is
// a contiguous run of the queue. Create one per transaction with NewFit.
type Fit struct {
	lim    Limits
	counts [256]int // per Kind, a uint8
	n      int
	size   int
}

// NewFit returns an empty transaction under lim, which must be valid (see
// Validate).
func (lim Limits) NewFit() *Fit { return &Fit{lim: lim} }

// Take reports whether an item of kind k with size bytes of Data fits
// after the items taken so far, and if so counts it as taken.
func (f *Fit) Take(k Kind, size int) bool {
	if f.n > 0 && (size > f.lim.MaxBytes-f.size || f.counts[k] >= f.lim.MaxFor(k)) {
		return false
	}
	f.counts[k]++
	f.size += size
	f.n++
	return true
}

// Len returns how many items were taken.
func (f *Fit) Len() int { return f.n }

// Txn is a transaction: a batch of items bound to a service under an ID
// that is sent, and resent, unchanged until Complete.
type Txn struct {
	// Service is the service the transaction is for.
	Service string
	// ID is the transaction ID: greater than every ID the store ever
	// returned for Service, including across reopen.
	ID int64
	// Format is the body format the caller passed to NextTxn, kept
	// unchanged: an opaque number to the store.
	Format int
	// Hash is HashItems of Items, recorded when the transaction was formed.
	Hash []byte
	// Items are the transaction's items in Seq order, exactly as formed.
	Items []Item
	// Created is when the transaction was formed.
	Created time.Time
}

// Backlog summarises what a service is owed.
type Backlog struct {
	// Service is the service ID.
	Service string
	// Txns counts stored, uncompleted transactions.
	Txns int
	// Queued counts items queued and not yet bound to a transaction.
	Queued int
	// Oldest is when the oldest pending item (queued or in a stored
	// transaction) was appended; zero when nothing is pending.
	Oldest time.Time
}

// Epoch identifies one grant of a service's lease. Epochs of a service
// increase with every grant to a new owner and are never reused.
type Epoch int64

// Store is the scheduler's durable state. All methods are safe for
// concurrent use, take ctx first, and return ctx.Err() (possibly wrapped)
// when ctx is done before they start. Sentinels are matched with errors.Is.
type Store interface {
	// Append atomically stores the entries: each item once, queued for each
	// of its services, in slice order (later entries get higher Seq). Either
	// all of them are stored or, on error, none. An entry whose Kind and Key
	// are already pending for a service is not queued again for that
	// service (nor a second entry with the same Kind and Key in one call);
	// an item no service still wants after that is not stored. Entries with
	// an empty Key are never deduplicated.
	Append(ctx context.Context, entries []Entry) error

	// Claim grants owner the lease on service for ttl and returns its epoch.
	// A holder that claims again before expiry extends its lease and keeps
	// its epoch; a new owner (the lease being free or expired) gets an epoch
	// greater than any before. Claim fails with ErrLeaseHeld while another
	// owner's lease runs.
	Claim(ctx context.Context, service, owner string, ttl time.Duration) (Epoch, error)

	// Release frees the lease if epoch is current, so another owner may
	// claim it at once; with a stale epoch it returns ErrStaleEpoch and
	// changes nothing.
	Release(ctx context.Context, service string, epoch Epoch) error

	// NextTxn forms a transaction from the oldest queued items of service
	// that are not bound to a transaction. It takes them in Seq order and
	// stops at the first item that does not fit: one whose kind already has
	// lim.MaxFor(kind) items in the transaction, or whose Data would take
	// the transaction's total past lim.MaxBytes (the first item always
	// fits). It never skips an item to take a later one, so a transaction
	// is always a contiguous run of the service's queue, and items of every
	// kind keep their Seq order across transactions. In one atomic step it
	// binds the items, allocates an ID greater than any ever returned for
	// service, and records format and HashItems of the items. It returns
	// (nil, nil) when nothing is queued, ErrStaleEpoch if epoch is not the
	// current lease epoch, and ErrInvalid for lim.MaxItems, lim.MaxBytes or
	// a value of lim.MaxItemsByKind below 1.
	NextTxn(ctx context.Context, service string, epoch Epoch, format int, lim Limits) (*Txn, error)

	// Txns lists up to limit stored transactions of service, oldest (lowest
	// ID) first, each with exactly the items it was formed with. limit <= 0
	// means all.
	Txns(ctx context.Context, service string, limit int) ([]Txn, error)

	// Complete deletes transaction id of service and every one of its items
	// that no other service still needs. Completing an unknown ID is a
	// no-op. It returns ErrStaleEpoch if epoch is not current.
	Complete(ctx context.Context, service string, epoch Epoch, id int64) error

	// Backlogs reports every service with pending work (stored transactions
	// or queued items), in byte order of service ID (as Go compares
	// strings). Services with nothing pending are omitted.
	Backlogs(ctx context.Context) ([]Backlog, error)

	// Purge deletes all stored transactions and queued items of service,
	// and the items no other service still needs. Transaction IDs keep
	// increasing afterwards, and the lease stays with its holder. It
	// returns ErrStaleEpoch if epoch is not current.
	Purge(ctx context.Context, service string, epoch Epoch) error
}

// OrderedAppender is an optional interface of a Store that orders its
// calls at a moment the caller can observe. The scheduler uses it to form
// an idle service's next transaction in the same commit as the items it
// holds, so that one commit, not two, stands between Enqueue and the PUT.
type OrderedAppender interface {
	// AppendOrdered is Append, except that it calls queued, at most once
	// and before it returns, as soon as the call has its place in the
	// store's order: any call made after queued has returned runs after
	// this Append, in the same atomic commit or a later one, and sees its
	// items if it succeeds. queued must not block.
	AppendOrdered(ctx context.Context, entries []Entry, queued func()) error
}

// AppendConcurrency is an optional interface of a Store that says how many
// Append calls are worth having under way at once. The scheduler merges
// the Enqueue calls waiting at any moment into one Append and keeps up to
// AppendsInFlight of them (4 without this interface) in flight: a store
// that prepares its next commit while the last one syncs gains from
// several, one whose Appends that share a service wait for each other's
// commit gains more from fewer, larger ones.
type AppendConcurrency interface {
	// AppendsInFlight returns how many Append calls to keep in flight: at
	// least 1.
	AppendsInFlight() int
}

// HashItems returns the SHA-256 digest of items' kinds, keys and data, in
// order and length-prefixed, so that no two different item lists share a
// digest by concatenation. Stores record it in Txn.Hash; the scheduler
// checks it before resending a stored transaction.
func HashItems(items []Item) []byte {
	h := sha256.New()
	var n [8]byte
	for _, it := range items {
		h.Write([]byte{byte(it.Kind)})
		binary.BigEndian.PutUint64(n[:], uint64(len(it.Key)))
		h.Write(n[:])
		h.Write([]byte(it.Key))
		binary.BigEndian.PutUint64(n[:], uint64(len(it.Data)))
		h.Write(n[:])
		h.Write(it.Data)
	}
	return h.Sum(nil)
}

// TxAppender appends entries as part of a transaction that is not the
// Store's own, such as the homeserver's database transaction that stores
// the events: the entries are queued if and only if that transaction
// commits. store/postgres returns one from Store.InTx (pgx) and
// Store.InSQLTx (database/sql); the scheduler takes it in EnqueueTx.
type TxAppender interface {
	// Store returns the Store the entries are queued in once the
	// transaction commits.
	Store() Store
	// AppendTx checks entries as Append does and writes them in the
	// transaction; nothing is queued before it commits, and a rollback
	// leaves nothing behind.
	AppendTx(ctx context.Context, entries []Entry) error
}
