package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// applicationID marks a file as an asdeliver store (PRAGMA application_id,
// "asdv"), so that Open refuses a database that belongs to something else.
const applicationID = 0x61736476

// schemaVersion is the version of the schema this code writes and reads
// (PRAGMA user_version). Versions 1 to 3 kept a row per item, a row per
// item and service, and from version 2 a row per pending key; version 4
// keeps batches (see layout.go); version 5 counts their references with a
// trigger. Open converts a file of an earlier version. A change to the
// schema raises the version and adds its step to migrate, and never edits
// one that has been released.
const schemaVersion = 5

// schema creates the tables of a new file. batches and queue are described
// in layout.go. A transaction holds its service's items in [first_seq,
// last_seq], the oldest not completed, so forming one writes no queue row:
// it moves services.bound_seq. services keeps what must outlive a queue:
// the last transaction ID, the lease, the highest epoch ever granted, and
// a count of queued items for Backlogs.
const schema = schemaBatches + `
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
`

// schemaBatches creates the tables of the items, for a new file and for
// the conversion from the per-item schemas. AUTOINCREMENT: seqs are never
// reused, even after the newest batches are deleted.
const schemaBatches = `
CREATE TABLE batches (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT, -- the seq of its last item
	n       INTEGER NOT NULL, -- items: seqs seq-n+1 to seq
	refs    INTEGER NOT NULL, -- queue rows that name it
	created INTEGER NOT NULL, -- unix nanoseconds
	keys    BLOB    NOT NULL,
	data    BLOB    NOT NULL
);

CREATE TABLE queue (
	service TEXT    NOT NULL,
	last    INTEGER NOT NULL, -- the highest seq of the batch the service takes
	batch   INTEGER NOT NULL,
	picks   BLOB,             -- the items of the batch it takes; NULL: all
	PRIMARY KEY (service, last)
) WITHOUT ROWID;
` + schemaUnref

// schemaUnref deletes a batch with the last queue row that names it.
const schemaUnref = `
CREATE TRIGGER unref AFTER DELETE ON queue BEGIN
	UPDATE batches SET refs = refs - 1 WHERE seq = old.batch;
	DELETE FROM batches WHERE seq = old.batch AND refs = 0;
END;
`

// migrate brings the schema of db up to schemaVersion, in one transaction
// with the new version number, and refuses a newer version. Open has
// already refused a file that is not an asdeliver store (probe).
func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if version > schemaVersion {
		return fmt.Errorf("%w: the file has schema version %d, this version of asdeliver knows versions up to %d: upgrade asdeliver", ErrSchemaTooNew, version, schemaVersion)
	}
	if version == schemaVersion {
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	switch version {
	case 0:
		_, err = tx.ExecContext(ctx, schema)
	case 4:
		_, err = tx.ExecContext(ctx, schemaUnref)
	default:
		err = fromItems(ctx, tx)
	}
	if err == nil {
		// PRAGMA takes no parameters; both values are ours.
		_, err = tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d; PRAGMA application_id = %d", schemaVersion, applicationID))
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("migrating schema from version %d to %d: %w", version, schemaVersion, err)
	}
	return nil
}
