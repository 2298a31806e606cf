package sqlite

import (
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// sqliteMagic starts the header of every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// probe decides, before anything writes to the file at path, whether Open
// may have it: a missing or empty file, or an SQLite database with no
// schema version, application id nor table, becomes a store; a file with
// asdeliver's application id is one. Anything else belongs to another
// application: probe says so, and leaves it byte for byte as it was, so it
// reads the header itself and opens the database only read-only.
func probe(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	var h [100]byte
	n, err := io.ReadFull(f, h[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil // SQLite's empty database
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("reading the database header: %w", err)
	case n < len(h) || string(h[:len(sqliteMagic)]) != sqliteMagic:
		return errors.New("not an asdeliver store: the file is not an SQLite database; Open leaves it untouched: pass the path of an asdeliver store or of a file that does not exist yet")
	}
	// The header's fields are big-endian (https://sqlite.org/fileformat.html).
	// A store's application id is set with its first tables, never unset.
	if appID := binary.BigEndian.Uint32(h[68:72]); appID != 0 {
		return checkApplicationID(int64(appID))
	}
	// A store whose first migration is still in the log has its id only
	// there: read through SQLite. Without a log, immutable keeps SQLite
	// from creating a -shm file.
	q := "?mode=ro"
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		q += "&immutable=1"
	}
	db, err := sql.Open(driverName, "file:"+escapePath(path)+q)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	var appID, version, tables int64
	if err := db.QueryRow("PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("reading application id: %w", err)
	}
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if err := db.QueryRow("SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return fmt.Errorf("reading schema: %w", err)
	}
	switch {
	case appID != 0:
		return checkApplicationID(appID)
	case version != 0:
		return fmt.Errorf("not an asdeliver store: the file has schema version (user_version) %d but not asdeliver's application_id; Open leaves it untouched", version)
	case tables != 0:
		return errors.New("not an asdeliver store: the file has tables but no schema version; Open leaves it untouched")
	}
	return nil
}

// checkApplicationID returns nil for asdeliver's application id and an
// error naming any other.
func checkApplicationID(appID int64) error {
	if appID == applicationID {
		return nil
	}
	return fmt.Errorf("not an asdeliver store: application_id is %#x, asdeliver's is %#x; Open leaves it untouched", appID, applicationID)
}
