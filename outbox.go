package scheduler

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/asdeliver/scheduler/store"
)

// ErrForeignTx is returned by EnqueueTx for a store.TxAppender of another
// Store than Config.Store: the events would be queued where this scheduler
// never looks.
var ErrForeignTx = errors.New("scheduler: the transaction's store is not Config.Store")

// EnqueueTx queues events as part of a database transaction of the
// caller's own, the transactional outbox: the homeserver stores an event
// and queues it for the application services in one commit, so the events
// are delivered if and only if that transaction commits, and a crash in
// between loses or invents nothing. tx comes from the Store, such as
// store/postgres's InTx (a pgx.Tx) or InSQLTx (a *sql.Tx), on a
// transaction the caller then commits or rolls back; EnqueueTx never does
// either.
//
// EnqueueTx validates the events and decides which services want them as
// Enqueue does, with the same errors, and writes what is wanted in tx
// without going through the event pool (so Config.MaxPoolEvents does not
// bound the call). It returns once the rows are written in tx; the events
// are queued, get their place in each service's order and are deduplicated
// (see Enqueue) only when tx has committed, in commit order with other
// calls, and the services' deliverers hear of them within milliseconds.
// On an error, tx may hold part of the rows: roll it back, or commit it
// without the events and call Enqueue instead.
//
// Interest is decided when EnqueueTx is called, against the registrations
// and Config.Rooms of that moment.
func (s *Scheduler) EnqueueTx(ctx context.Context, tx store.TxAppender, events ...Event) error {
	if tx == nil {
		return fmt.Errorf("%w: nil store.TxAppender", ErrForeignTx)
	}
	if !sameStore(tx.Store(), s.cfg.Store) {
		return ErrForeignTx
	}
	return s.intake(ctx, listBatch(s, "events", 0, events), func(ctx context.Context, entries []store.Entry, what string) error {
		if len(entries) == 0 {
			return nil
		}
		if err := tx.AppendTx(ctx, entries); err != nil {
			return fmt.Errorf("error writing %s in the caller's transaction: %w", what, err)
		}
		return nil
	})
}

// sameStore reports whether a and b are the same Store value, without the
// panic of == on a Store type that is not comparable.
func sameStore(a, b store.Store) bool {
	t := reflect.TypeOf(a)
	return t != nil && t == reflect.TypeOf(b) && t.Comparable() && a == b
}
