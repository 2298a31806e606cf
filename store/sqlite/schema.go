package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// applicationID marks a file as an asdeliver store (PRAGMA application_id,
// "asdv"), so that Open refuses a database that belongs to something else.
const applicationID = 0x61736476

// migrations are the schema changes, in order: migrations[i] takes a file
// from schema version i to i+1 (PRAGMA user_version), in a transaction.
// Append to the list; never edit an entry that has been released.
var migrations = []func(ctx context.Context, tx *sql.Tx) error{
	// 1: the initial schema.
	//
	// items holds each item's bytes once. AUTOINCREMENT keeps seq from being
	// reused after the newest items are deleted, so seq orders appends for
	// the life of the file.
	//
	// queue has one row per item and service that wants it, pending until
	// the service completes the transaction that holds it (or purges).
	// Rows of a service with seq <= services.bound_seq are bound to a
	// transaction, the others are queued: transactions bind the oldest rows
	// and appends always get higher seqs, so a transaction's rows are
	// exactly the service's rows in [txns.first_seq, txns.last_seq] and
	// forming one writes no queue row. kind and key are copied from the item
	// for the unique index that deduplicates pending keys.
	//
	// services keeps what must outlive the service's queue: the last
	// transaction ID, the lease and the highest epoch ever granted, and a
	// count of queued rows so that Backlogs does not count them.
	execSQL(`
CREATE TABLE items (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	kind    INTEGER NOT NULL,
	key     TEXT    NOT NULL,
	data    BLOB    NOT NULL,
	created INTEGER NOT NULL -- unix nanoseconds
);

CREATE TABLE queue (
	service TEXT    NOT NULL,
	seq     INTEGER NOT NULL,
	kind    INTEGER NOT NULL,
	key     TEXT    NOT NULL,
	PRIMARY KEY (service, seq)
) WITHOUT ROWID;

CREATE INDEX queue_by_seq ON queue (seq);

CREATE UNIQUE INDEX queue_pending_key ON queue (service, kind, key) WHERE key <> '';

CREATE TABLE txns (
	service   TEXT    NOT NULL,
	id        INTEGER NOT NULL,
	format    INTEGER NOT NULL,
	hash      BLOB    NOT NULL,
	created   INTEGER NOT NULL, -- unix nanoseconds
	first_seq INTEGER NOT NULL,
	last_seq  INTEGER NOT NULL,
	PRIMARY KEY (service, id)
) WITHOUT ROWID;

CREATE TABLE services (
	service       TEXT    NOT NULL PRIMARY KEY,
	last_txn_id   INTEGER NOT NULL DEFAULT 0,
	bound_seq     INTEGER NOT NULL DEFAULT 0,
	queued        INTEGER NOT NULL DEFAULT 0,
	lease_owner   TEXT    NOT NULL DEFAULT '',
	lease_epoch   INTEGER NOT NULL DEFAULT 0, -- 0: no lease granted
	lease_expires INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds
	max_epoch     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`),

	// 2: a key index that is cheap to keep. Version 1 deduplicated pending
	// keys with a unique index on the queue's text keys, so completing a
	// transaction deleted one entry per item at random places of an index
	// as large as the backlog: after an outage, each transaction of the
	// catch-up rewrote about one page per item.
	//
	// queue keeps only (service, seq). pending has one row per keyed
	// queue row: a 64-bit hash of kind and key (asdeliver_key_hash) and
	// the seq it was queued under. Append checks a hit against the item
	// itself (a hash says only "maybe"); a row whose seq has left the
	// queue is stale. Complete does not delete pending rows: it counts
	// them (services.dedup_stale) and removes them in bulk, all of them
	// once the service has nothing pending, otherwise once the stale rows
	// outnumber the queued ones, so a removal costs a bounded amount per
	// completed item and the index is rewritten in order, not at random.
	execSQL(`
CREATE TABLE pending (
	service TEXT    NOT NULL,
	h       INTEGER NOT NULL,
	seq     INTEGER NOT NULL,
	PRIMARY KEY (service, h, seq)
) WITHOUT ROWID;
INSERT INTO pending (service, h, seq)
	SELECT service, asdeliver_key_hash(kind, key), seq FROM queue WHERE key <> '';

CREATE TABLE queue_v2 (
	service TEXT    NOT NULL,
	seq     INTEGER NOT NULL,
	PRIMARY KEY (service, seq)
) WITHOUT ROWID;
INSERT INTO queue_v2 (service, seq) SELECT service, seq FROM queue;
DROP TABLE queue;
ALTER TABLE queue_v2 RENAME TO queue;
CREATE INDEX queue_by_seq ON queue (seq);

ALTER TABLE services ADD COLUMN dedup_stale INTEGER NOT NULL DEFAULT 0;
`),

	// 3: the pending table may lack the keys of the newest items. The
	// writer keeps up to recentMax of them in memory and writes them to
	// the table in sorted batches; the keys of queued items above the
	// table's highest seq are read back from the queue (see recentKeys).
	// A version that trusts the table to hold every pending key would
	// queue duplicates, so the version changes; the tables do not.
	execSQL(`SELECT 1`),

	// 4: a few rows per Append instead of three per item (see layout.go):
	// batches hold the items of a call, queue rows say which of them each
	// service takes, and the pending keys live in memory (pendingKeys),
	// rebuilt from the batches at Open. queue rows are keyed by the
	// highest seq the service takes from the batch (last), so a service's
	// rows in key order are its items in seq order, and those it has
	// completed are a prefix.
	toBatches,
}

// execSQL returns a migration that runs the statements of query.
func execSQL(query string) func(ctx context.Context, tx *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query)
		return err
	}
}

// keyHash is the hash of an item's kind and key in the pending table of
// versions 2 and 3: FNV-1a, 64 bits. Migration 2 stores it.
func keyHash(kind int64, key string) int64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	h = (h ^ uint64(byte(kind))) * prime
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	return int64(h)
}

// schemaVersion is the version this code writes and reads.
var schemaVersion = len(migrations)

// migrate brings the schema of db up to schemaVersion, each step in its own
// transaction together with the new version number. It refuses a file whose
// version is newer, and a file that has tables but is not an asdeliver
// store. Open has already refused such a file before writing anything (see
// probe); these checks only keep migrate safe on its own.
func migrate(ctx context.Context, db *sql.DB) error {
	var version, appID int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("reading application id: %w", err)
	}
	if appID != 0 && appID != applicationID {
		return fmt.Errorf("not an asdeliver store: application_id is %#x", appID)
	}
	if appID == 0 && version != 0 {
		return fmt.Errorf("not an asdeliver store: the file has schema version (user_version) %d but not asdeliver's application_id", version)
	}
	if version > schemaVersion {
		return fmt.Errorf("%w: the file has schema version %d, this version of asdeliver knows versions up to %d: upgrade asdeliver", ErrSchemaTooNew, version, schemaVersion)
	}
	if version == 0 {
		var tables int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
			return fmt.Errorf("reading schema: %w", err)
		}
		if tables != 0 {
			return fmt.Errorf("not an asdeliver store: the file has tables but no schema version")
		}
	}
	for v := version; v < schemaVersion; v++ {
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if err := migrations[v](ctx, tx); err != nil {
				return err
			}
			// PRAGMA takes no parameters; both values are ours.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err != nil {
			return fmt.Errorf("migrating schema from version %d to %d: %w", v, v+1, err)
		}
	}
	return nil
}
