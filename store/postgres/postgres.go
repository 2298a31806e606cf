// Package postgres is a store.Store kept in PostgreSQL
// (github.com/jackc/pgx/v5), for homeservers that run on PostgreSQL and
// for several scheduler processes that share one database: each of them
// may append, and the lease of each service (store.Store.Claim) lets
// exactly one of them send to it at a time.
//
// Everything lives in one schema (Options.Schema, "asdeliver" by default),
// which Open creates and migrates: several processes may open the same
// database at once; the first migrates while the others wait for it.
//
// Guarantees, beyond the store.Store contract:
//
//   - Durability: every method that changes state does so in one
//     PostgreSQL transaction and returns once it has committed, so what it
//     reported as done is as durable as the server makes a commit
//     (synchronous_commit; keep its default, on). If the connection breaks
//     while a call commits, the call returns an error and may or may not
//     have taken effect; appending again is safe, as pending keys are not
//     queued twice.
//   - Order with concurrent writers: Seq increases in commit order for each
//     service, whatever the number of processes appending. An Append locks
//     the rows of its services in the heads table (in sorted order, so two
//     Appends never deadlock) before it draws Seq values from a sequence,
//     and holds the locks until it commits. Two Appends that share a
//     service therefore commit one after the other, the later with the
//     higher Seq, so NextTxn, which takes the oldest queued items it can
//     see, never binds an item while one with a lower Seq for the same
//     service is still to commit. Appends for disjoint services do not
//     wait for each other.
//   - Leases are rows of the services table, with expiry times on the
//     database's clock and epochs drawn as the highest epoch ever granted
//     for the service plus one, under the row's lock; the table is logged,
//     so no epoch is reused, also after a crash of the server. NextTxn,
//     Complete, Purge and Release check the epoch under a lock of the lease
//     row in the transaction that makes their change. A Claim locks the
//     row FOR UPDATE, which conflicts with each of their locks, so it
//     waits for them, and they fail with store.ErrStaleEpoch once it has
//     happened. Complete's lock (FOR KEY SHARE) does not conflict with
//     NextTxn's (FOR NO KEY UPDATE), so an owner forms its next
//     transaction while it completes the last.
//   - An item wanted by several services is stored once and deleted by the
//     Complete or Purge that removes its last queue row, also when two
//     services complete it at once in different processes: such an item is
//     locked before the check, so one of the two sees the other's delete.
//   - Transaction IDs are at least the database clock in microseconds when
//     formed, so even a recreated schema does not hand an application
//     service an ID it has seen.
//   - Wake-ups: the Store implements store.Notifier over LISTEN/NOTIFY on
//     a connection of its own (or by polling, with Options.PollOnly); see
//     Store.Watch.
//   - Plans: the tables are queues, whose statistics are always out of
//     date, so the Store's connections set enable_seqscan and
//     enable_bitmapscan off and plan_cache_mode to force_generic_plan
//     (unless the DSN sets them), and every statement is written so that
//     its only index path is the one that reads just its rows.
//   - Transactional outbox: AppendTx and AppendSQLTx queue entries in the
//     caller's own database transaction, if and only if it commits; see
//     AppendTx.
//
// The Data of the items the Store returns is a fresh copy for each call.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asdeliver/scheduler/store"
)

// ErrSchemaTooNew is returned (wrapped, naming both versions) by Open and
// OpenWithOptions when the schema was written by a newer version of this
// package, whose tables this version does not know. Upgrade the program.
var ErrSchemaTooNew = errors.New("postgres: store schema is newer than this version supports")

// ErrForeignSchema is returned (wrapped, naming the schema) by Open and
// OpenWithOptions when the schema holds tables that are not an asdeliver
// store: it belongs to another application. Choose another Options.Schema.
var ErrForeignSchema = errors.New("postgres: schema belongs to another application")

// DefaultSchema is the default of Options.Schema.
const DefaultSchema = "asdeliver"

// DefaultMaxConns is the default of Options.MaxConns.
const DefaultMaxConns = 8

// DefaultPollInterval is the default of Options.PollInterval.
const DefaultPollInterval = time.Second

// Options tune OpenWithOptions. The zero value means the defaults, which is
// what Open uses.
type Options struct {
	// Schema is the PostgreSQL schema that holds the store's tables,
	// created by Open if it does not exist. Stores that share a schema share
	// their queues and leases: give every scheduler of one deployment the
	// same schema, and anything else another one. A schema that holds
	// tables of another application is refused (ErrForeignSchema). At most
	// 63 bytes. Defaults to DefaultSchema ("asdeliver").
	Schema string
	// MaxConns caps the connections of the Store's pool; the listener that
	// carries wake-ups (see PollOnly) uses one more. pool_max_conns in the
	// DSN is overridden. Defaults to DefaultMaxConns (8).
	MaxConns int32
	// PollInterval is how often the Store moves rows of the transactional
	// outbox into the queues without being told (see AppendTx) and, with
	// PollOnly, how often it looks for signals for its watchers. Defaults to
	// DefaultPollInterval (1s).
	PollInterval time.Duration
	// PollOnly makes the Store use no LISTEN connection: for connection
	// poolers that cannot LISTEN (PgBouncer in transaction mode). Watch
	// then reports signals once per PollInterval, from counters in the
	// heads table, instead of within milliseconds. Stores with and without
	// it may share a schema. (Such a pooler must also pass on or ignore
	// the session parameter jit, which the Store sets to off unless the
	// DSN sets it: PgBouncer's ignore_startup_parameters.) Defaults to
	// false.
	PollOnly bool
	// Logger receives the errors of the Store's background work (the
	// listener's connection, the outbox), which no call returns. Defaults
	// to discarding them.
	Logger *slog.Logger
}

// Store is a store.Store kept in PostgreSQL. Create it with Open or
// OpenWithOptions and release it with Close. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	opts   Options
	log    *slog.Logger
	sql    queries

	// channel is the LISTEN/NOTIFY channel of the schema; origin names
	// this Store in the notifications it sends, so that its listener can
	// skip them.
	channel string
	origin  string
	// lockKey is the advisory lock key of the schema's migrations and
	// of its outbox forwarder.
	lockKey int64

	// known holds the services that have rows in the services and heads
	// tables, which are never deleted, so that Append and Claim create
	// them only once per Store.
	known sync.Map

	closed  atomic.Bool
	closing chan struct{} // closed by Close
	bg      sync.WaitGroup
	stop    context.CancelFunc // ends the background goroutine

	watch watchers
}

var (
	_ store.Store             = (*Store)(nil)
	_ store.Notifier          = (*Store)(nil)
	_ store.AppendConcurrency = (*Store)(nil)
	_ io.Closer               = (*Store)(nil)
)

// Open opens the store in the PostgreSQL database at dsn, a connection
// string as pgx reads it ("postgres://user@host:5432/db?sslmode=disable"
// or "host=... user=... dbname=..."), creating and migrating its schema as
// needed. It is OpenWithOptions(ctx, dsn, Options{}). ctx bounds the
// connecting and migrating only.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return OpenWithOptions(ctx, dsn, Options{})
}

// OpenWithOptions is Open with options. It fails with a wrapped error
// that says what to do when the DSN does not parse or connect, with
// ErrForeignSchema when the schema belongs to another application, and
// with ErrSchemaTooNew when a newer version wrote it. Unless
// opts.PollOnly is set, it also opens the listener connection and fails if
// it cannot LISTEN.
func OpenWithOptions(ctx context.Context, dsn string, opts Options) (*Store, error) {
	const op = "error opening postgres store"
	if err := fillOptions(&opts); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: the DSN does not parse: %w: pass a URL such as postgres://user@host:5432/dbname or key=value pairs", op, err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MinConns > cfg.MaxConns {
		cfg.MinConns = cfg.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "asdeliver"
	}
	// The store's statements are short: compiling one with JIT, which a
	// large estimate can trigger, costs far more than running it.
	//
	// The tables are queues: they swing between empty and a large backlog
	// faster than autovacuum's ANALYZE follows. A plan made for statistics
	// that say "empty" or "small" scans a whole table, or a service's
	// whole queue and sorts it, to find a few rows, and each call then
	// costs as much as the backlog. Every statement is written so that its
	// only index path is the one wanted, so the store's connections rule
	// out sequential and bitmap scans, and keep one generic plan per
	// statement: planning each call costs more CPU than the statement.
	for name, value := range map[string]string{
		"jit":               "off",
		"enable_seqscan":    "off",
		"enable_bitmapscan": "off",
		"plan_cache_mode":   "force_generic_plan",
	} {
		if _, set := cfg.ConnConfig.RuntimeParams[name]; !set {
			cfg.ConnConfig.RuntimeParams[name] = value
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	s := &Store{
		pool:    pool,
		schema:  opts.Schema,
		opts:    opts,
		log:     opts.Logger,
		sql:     newQueries(opts.Schema),
		channel: channelName(opts.Schema),
		origin:  newOrigin(),
		lockKey: lockKey(opts.Schema),
		closing: make(chan struct{}),
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: cannot connect to the database: %w: check the DSN and that the server runs and accepts the user", op, err)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: schema %q: %w", op, opts.Schema, err)
	}
	var l *listener
	if !opts.PollOnly {
		if l, err = s.listen(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("%s: %w: if a connection pooler stands between the store and the server, set Options.PollOnly", op, err)
		}
	}
	bgCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.bg.Go(func() { s.run(bgCtx, l) })
	return s, nil
}

// fillOptions checks opts and fills in the defaults.
func fillOptions(opts *Options) error {
	if opts.Schema == "" {
		opts.Schema = DefaultSchema
	}
	if len(opts.Schema) > 63 || !utf8.ValidString(opts.Schema) || strings.ContainsRune(opts.Schema, 0) {
		return fmt.Errorf("Options.Schema %q is not a valid schema name: use at most 63 bytes of UTF-8 without NUL", opts.Schema)
	}
	if opts.MaxConns < 0 {
		return fmt.Errorf("Options.MaxConns is negative (%d): use 0 for the default", opts.MaxConns)
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.PollInterval < 0 {
		return fmt.Errorf("Options.PollInterval is negative (%v): use 0 for the default", opts.PollInterval)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// channelName returns the LISTEN/NOTIFY channel of schema: a hash keeps it
// within PostgreSQL's 63 bytes whatever the schema's name.
func channelName(schema string) string {
	h := fnv.New64a()
	h.Write([]byte(schema))
	return fmt.Sprintf("asdeliver_%016x", h.Sum64())
}

// lockKey returns the advisory lock key of schema.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("asdeliver schema "))
	h.Write([]byte(schema))
	return int64(h.Sum64())
}

// newOrigin returns a random name for a Store in its notifications.
func newOrigin() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// Close ends the Store's background work and closes its connections,
// waiting for calls in flight to finish. Every later call of a Store
// method returns an error matching store.ErrClosed; Close itself may be
// called again and returns nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.closing)
	s.stop()
	s.bg.Wait()
	s.pool.Close()
	return nil
}

// Schema returns the name of the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// invalid returns an error matching store.ErrInvalid that says why.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("postgres: %s: %s: %w", op, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// stale returns an error matching store.ErrStaleEpoch.
func stale(op, service string, epoch store.Epoch) error {
	return fmt.Errorf("postgres: %s: service %q, epoch %d: %w", op, service, epoch, store.ErrStaleEpoch)
}

// enter returns the error a call must fail with before it starts: the
// store is closed, or ctx is done.
func (s *Store) enter(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return nil
}

// fail wraps err, an error of the database, with op; if the store was
// closed meanwhile, the error matches store.ErrClosed as well.
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres: %s: %w (%w)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// checkName returns an error unless name, a service ID or an owner, can be
// stored as PostgreSQL text: non-empty UTF-8 without NUL.
func checkName(op, what, name string) error {
	switch {
	case name == "":
		return invalid(op, "empty %s", what)
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return invalid(op, "%s %q is not UTF-8 text without NUL bytes", what, name)
	}
	return nil
}

// ident returns schema as a quoted SQL identifier.
func ident(schema string) string {
	return pgx.Identifier{schema}.Sanitize()
}
