package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// appName marks a schema as an asdeliver store in its schema_version
// table, so that Open refuses a schema that belongs to something else.
const appName = "asdeliver"

// migrations are the schema changes, in order: migrations[i] takes a
// schema from version i to i+1 (schema_version.version). {s} stands for
// the quoted schema name. Append to the list; never edit an entry that has
// been released.
var migrations = []string{
	// 1: the initial schema.
	//
	// items holds each item's bytes once. Its seq comes from items_seq,
	// drawn by Append after it has locked the heads rows of its services,
	// so seq increases in commit order per service. services lists the
	// services the item was queued for when there are several, NULL when
	// there is one: Complete and Purge lock such shared items before they
	// check whether another service still needs them. The key index finds
	// pending keys for deduplication.
	//
	// queue has one row per item and service, pending until the service
	// completes the transaction that holds it or purges. A service's rows
	// with seq <= services.bound_seq are bound to transactions, the others
	// are queued: NextTxn binds the oldest and new rows always get higher
	// seqs, so a transaction's items are the service's rows in
	// [txns.first_seq, txns.last_seq], and forming one writes no queue row.
	//
	// services holds what the owner of a service changes: the lease, the
	// highest epoch ever granted, the last transaction ID, bound_seq, and
	// taken, the count of rows that ever left the queue (bound or purged).
	// heads holds what appenders change: appended, the count of rows ever
	// queued, and last_seq, the highest; its rows are the locks that order
	// Appends. The two are separate so that appending and sending do not
	// wait for each other's locks. appended - taken is the queued count.
	// up_gen counts ServiceUp calls, for stores that poll for signals.
	//
	// outbox holds entries that callers appended in their own transactions
	// (AppendTx) until the forwarder moves them into the queues: call
	// comes from outbox_call, once per statement, pos is the entry's place
	// in it, and services is a JSON array of service IDs.
	`
CREATE TABLE {s}.schema_version (
	app     text    NOT NULL,
	version integer NOT NULL
);
INSERT INTO {s}.schema_version (app, version) VALUES ('asdeliver', 0);

CREATE SEQUENCE {s}.items_seq;
CREATE SEQUENCE {s}.outbox_call;

CREATE TABLE {s}.items (
	seq      bigint      PRIMARY KEY,
	kind     smallint    NOT NULL,
	key      bytea       NOT NULL,
	data     bytea       NOT NULL,
	created  timestamptz NOT NULL,
	services text[]
);
CREATE INDEX items_key ON {s}.items (key) WHERE key <> '';

CREATE TABLE {s}.queue (
	service text   NOT NULL,
	seq     bigint NOT NULL,
	PRIMARY KEY (service, seq)
);

CREATE TABLE {s}.txns (
	service   text        NOT NULL,
	id        bigint      NOT NULL,
	format    bigint      NOT NULL,
	hash      bytea       NOT NULL,
	created   timestamptz NOT NULL,
	first_seq bigint      NOT NULL,
	last_seq  bigint      NOT NULL,
	PRIMARY KEY (service, id)
);

CREATE TABLE {s}.services (
	service       text        PRIMARY KEY,
	lease_owner   text        NOT NULL DEFAULT '',
	lease_epoch   bigint      NOT NULL DEFAULT 0, -- 0: no lease granted
	lease_expires timestamptz,
	max_epoch     bigint      NOT NULL DEFAULT 0,
	last_txn_id   bigint      NOT NULL DEFAULT 0,
	bound_seq     bigint      NOT NULL DEFAULT 0,
	taken         bigint      NOT NULL DEFAULT 0
);

CREATE TABLE {s}.heads (
	service  text   PRIMARY KEY,
	appended bigint NOT NULL DEFAULT 0,
	last_seq bigint NOT NULL DEFAULT 0,
	up_gen   bigint NOT NULL DEFAULT 0
);

CREATE TABLE {s}.outbox (
	call     bigint      NOT NULL,
	pos      integer     NOT NULL,
	kind     smallint    NOT NULL,
	key      bytea       NOT NULL,
	data     bytea       NOT NULL,
	services text        NOT NULL,
	created  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (call, pos)
);
`,
}

// schemaVersion is the version this code writes and reads.
var schemaVersion = len(migrations)

// expand replaces {s} in sql with the quoted schema name.
func expand(schema, sql string) string {
	return strings.ReplaceAll(sql, "{s}", ident(schema))
}

// migrate brings the schema up to schemaVersion, creating it if needed,
// each step in a transaction of its own together with the new version
// number. It holds an advisory lock on the schema's key throughout, so
// processes that open one database at once migrate one after the other.
// It refuses a schema whose version is newer, and one that holds tables
// but is not an asdeliver store.
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", s.lockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// A session lock: release it before the connection goes back to
		// the pool. If this fails the connection is broken, and the
		// server released the lock when it noticed.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", s.lockKey); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // the pool drops a closed connection
		}
	}()

	version, err := s.schemaState(ctx, conn.Conn())
	if err != nil {
		return err
	}
	if version > schemaVersion {
		return fmt.Errorf("%w: the schema has version %d, this version of asdeliver knows versions up to %d: upgrade asdeliver", ErrSchemaTooNew, version, schemaVersion)
	}
	for v := version; v < schemaVersion; v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if v == 0 {
				if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident(s.schema)); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, expand(s.schema, migrations[v])); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, expand(s.schema, "UPDATE {s}.schema_version SET version = $1"), v+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating from version %d to %d: %w", v, v+1, err)
		}
	}
	return nil
}

// schemaState returns the version of the schema, 0 if it does not exist
// or is empty, and an error matching ErrForeignSchema if it holds tables
// of another application.
func (s *Store) schemaState(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists, hasVersion bool
	var objects int
	err := conn.QueryRow(ctx, `
SELECT n.oid IS NOT NULL,
       to_regclass($2) IS NOT NULL,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)
FROM (SELECT $1::text AS name) x LEFT JOIN pg_namespace n ON n.nspname = x.name`,
		s.schema, ident(s.schema)+".schema_version").Scan(&exists, &hasVersion, &objects)
	if err != nil {
		return 0, fmt.Errorf("reading the schema: %w", err)
	}
	switch {
	case !exists:
		return 0, nil
	case !hasVersion && objects == 0:
		return 0, nil // an empty schema, made for us
	case !hasVersion:
		return 0, fmt.Errorf("%w: it holds %d tables or other relations, but no asdeliver schema_version table: choose another Options.Schema", ErrForeignSchema, objects)
	}
	var app string
	var version int
	err = conn.QueryRow(ctx, expand(s.schema, "SELECT app, version FROM {s}.schema_version")).Scan(&app, &version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("%w: its schema_version table is empty: choose another Options.Schema", ErrForeignSchema)
	case err != nil:
		return 0, fmt.Errorf("%w: reading its schema_version table: %v: choose another Options.Schema", ErrForeignSchema, err)
	case app != appName:
		return 0, fmt.Errorf("%w: its schema_version table names application %q: choose another Options.Schema", ErrForeignSchema, app)
	}
	return version, nil
}
