package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asdeliver/scheduler/store"
)

// outboxChunk is how many entries one outbox statement inserts: with 5
// parameters each, far below PostgreSQL's limit of 65535.
const outboxChunk = 1000

// forwardBatch is how many outbox rows the forwarder moves per database
// transaction.
const forwardBatch = 1000

// AppendTx queues entries as Append does, but as part of tx, the caller's
// own transaction on the same database: they are queued if and only if tx
// commits, so a homeserver can store an event and queue it for the
// application services in one commit. entries are checked as Append checks
// them (store.ErrInvalid) and nothing is written when one is invalid.
//
// In tx, AppendTx only inserts rows into the schema's outbox table, with
// no Seq yet, and a notification that PostgreSQL delivers when tx commits.
// It takes no lock that another transaction waits for: however long tx
// stays open, other Appends and AppendTx calls go on, and so does
// delivery. Once tx has committed, a forwarder (the background goroutine
// of whichever Store of the schema gets there first, told by the
// notification, or at the latest within Options.PollInterval) moves the
// rows into the queues in one transaction of its own, as one Append of all
// the rows it finds, in commit-visibility order and, within one call,
// in slice order; only then do they get their Seq and count as pending.
// An Append called after tx committed forwards them first if no forwarder
// has yet, so they come before its entries, as they would with two
// Appends one after the other.
// The forwarders of a schema take turns (an advisory lock), so rows of
// one call never overtake each other. Deduplication by Kind and Key
// applies when the rows are forwarded, against the items pending then and
// among the rows forwarded together. A rollback leaves nothing behind.
//
// The forwarded items are reported to the watchers of every Store of the
// schema, the forwarder's own included (see Watch). The tx must belong to
// a connection to the Store's database; it is used, not committed.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, entries []store.Entry) error {
	const op = "appending entries in the caller's transaction"
	if err := s.checkOutbox(ctx, op, tx == nil, entries); err != nil {
		return err
	}
	for chunk := range slices.Chunk(entries, outboxChunk) {
		n := len(chunk)
		kinds, keys, datas, services := make([]int16, n), make([][]byte, n), make([][]byte, n), make([]string, n)
		for i, e := range chunk {
			kinds[i], keys[i], datas[i], services[i] = int16(e.Kind), []byte(e.Key), e.Data, servicesJSON(e.Services)
		}
		if _, err := tx.Exec(ctx, s.sql.outboxInsert, s.channel, outboxNotice, kinds, keys, datas, services); err != nil {
			return fmt.Errorf("postgres: %s: %w", op, err)
		}
	}
	return nil
}

// AppendSQLTx is AppendTx for a transaction of database/sql, with any
// PostgreSQL driver (github.com/lib/pq, pgx's stdlib): it passes scalar
// parameters only.
func (s *Store) AppendSQLTx(ctx context.Context, tx *sql.Tx, entries []store.Entry) error {
	const op = "appending entries in the caller's transaction"
	if err := s.checkOutbox(ctx, op, tx == nil, entries); err != nil {
		return err
	}
	for chunk := range slices.Chunk(entries, outboxChunk) {
		args := make([]any, 0, 2+5*len(chunk))
		args = append(args, s.channel, outboxNotice)
		for i, e := range chunk {
			args = append(args, i+1, int(e.Kind), []byte(e.Key), e.Data, servicesJSON(e.Services))
		}
		if _, err := tx.ExecContext(ctx, s.outboxValues(len(chunk)), args...); err != nil {
			return fmt.Errorf("postgres: %s: %w", op, err)
		}
	}
	return nil
}

// checkOutbox returns the error AppendTx and AppendSQLTx must fail with
// before they write: noTx says their transaction is nil.
func (s *Store) checkOutbox(ctx context.Context, op string, noTx bool, entries []store.Entry) error {
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	if noTx {
		return invalid(op, "nil transaction")
	}
	return checkEntries(op, entries)
}

// servicesJSON encodes the services of an outbox row. Service IDs are
// checked UTF-8, so they come back unchanged.
func servicesJSON(services []string) string {
	p, _ := json.Marshal(services) // strings only: cannot fail
	return string(p)
}

// outboxValues returns the statement that AppendSQLTx runs for n entries:
// outboxInsert with a VALUES list instead of arrays, which not every
// database/sql driver can pass.
func (s *Store) outboxValues(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		p := 3 + 5*i
		fmt.Fprintf(&b, "($%d::integer, $%d::smallint, $%d::bytea, $%d::bytea, $%d::text)", p, p+1, p+2, p+3, p+4)
	}
	return expand(s.schema, `WITH c AS (SELECT nextval('{s}.outbox_call') AS call),
ins AS (
	INSERT INTO {s}.outbox (call, pos, kind, key, data, services)
	SELECT c.call, v.pos, v.kind, v.key, v.data, v.services
	FROM c, (VALUES `+b.String()+`) AS v(pos, kind, key, data, services)
	RETURNING 1
)
SELECT pg_notify($1, $2) WHERE EXISTS (SELECT 1 FROM ins)`)
}

// outboxRow is one row taken from the outbox.
type outboxRow struct {
	call     int64
	pos      int32
	entry    store.Entry
	services string
	created  time.Time
}

// forward moves every committed outbox row into the queues. Errors go to
// the log: the rows stay in the outbox for the next try.
func (s *Store) forward(ctx context.Context) {
	if err := s.forwardAll(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("asdeliver postgres store: forwarding the outbox", "error", err)
	}
}

// forwardAll moves every outbox row that committed before it was called
// into the queues, in transactions of forwardBatch rows.
func (s *Store) forwardAll(ctx context.Context) error {
	for {
		n, err := s.forwardOnce(ctx)
		if err != nil {
			return err
		}
		if n < forwardBatch {
			return nil
		}
	}
}

// forwardOnce moves up to forwardBatch outbox rows into the queues in one
// transaction and reports them to the watchers. It returns how many rows
// it took.
func (s *Store) forwardOnce(ctx context.Context) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey^1); err != nil {
		return 0, fmt.Errorf("taking the forwarder's lock: %w", err)
	}
	rows, err := tx.Query(ctx, s.sql.outboxTake, forwardBatch)
	if err != nil {
		return 0, err
	}
	var taken []outboxRow
	var r outboxRow
	var kind int16
	var key []byte
	_, err = pgx.ForEachRow(rows, []any{&r.call, &r.pos, &kind, &key, &r.entry.Data, &r.services, &r.created}, func() error {
		r.entry.Kind, r.entry.Key = store.Kind(kind), string(key)
		taken = append(taken, r)
		return nil
	})
	if err != nil || len(taken) == 0 {
		return 0, err
	}
	// DELETE ... RETURNING returns rows in no particular order.
	slices.SortFunc(taken, func(a, b outboxRow) int {
		return cmp.Or(cmp.Compare(a.call, b.call), cmp.Compare(a.pos, b.pos))
	})
	entries := make([]store.Entry, 0, len(taken))
	created := make([]time.Time, 0, len(taken))
	for _, r := range taken {
		if err := json.Unmarshal([]byte(r.services), &r.entry.Services); err != nil || checkEntries("", []store.Entry{r.entry}) != nil {
			// Not written by AppendTx: drop it rather than block the
			// outbox behind it.
			s.log.Error("asdeliver postgres store: dropping an outbox row that AppendTx did not write",
				"call", r.call, "pos", r.pos, "services", r.services)
			continue
		}
		entries = append(entries, r.entry)
		created = append(created, r.created)
	}
	set := newAppendSet(entries, created)
	var missing []string
	var written *appendResult
	if len(set.entries) > 0 {
		// In this transaction, not on another connection of the pool,
		// which may have no other to give.
		b := &pgx.Batch{}
		if missing = s.missing(set.services); len(missing) > 0 {
			s.queueEnsure(b, missing)
		}
		written = s.queueAppend(b, set, false)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	if written != nil {
		written.record(&s.watch)
	}
	s.markKnown(missing)
	s.watch.deliver(work(set.services))
	return len(taken), nil
}

// InTx returns a store.TxAppender that queues entries in tx as AppendTx
// does: pass it to the scheduler's EnqueueTx, which decides which services
// want the events before it writes them.
func (s *Store) InTx(tx pgx.Tx) store.TxAppender { return pgxAppender{s, tx} }

// InSQLTx returns a store.TxAppender that queues entries in tx as
// AppendSQLTx does: pass it to the scheduler's EnqueueTx.
func (s *Store) InSQLTx(tx *sql.Tx) store.TxAppender { return sqlAppender{s, tx} }

// pgxAppender is the store.TxAppender of a pgx transaction.
type pgxAppender struct {
	s  *Store
	tx pgx.Tx
}

func (a pgxAppender) Store() store.Store { return a.s }

func (a pgxAppender) AppendTx(ctx context.Context, entries []store.Entry) error {
	return a.s.AppendTx(ctx, a.tx, entries)
}

// sqlAppender is the store.TxAppender of a database/sql transaction.
type sqlAppender struct {
	s  *Store
	tx *sql.Tx
}

func (a sqlAppender) Store() store.Store { return a.s }

func (a sqlAppender) AppendTx(ctx context.Context, entries []store.Entry) error {
	return a.s.AppendSQLTx(ctx, a.tx, entries)
}
