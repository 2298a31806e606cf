//go:build !cgo

package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// driverName is the database/sql name of the driver: modernc.org/sqlite,
// SQLite translated to Go, for builds without cgo (CGO_ENABLED=0).
const driverName = "sqlite"

// newDriver returns a driver of its own (the hook must not reach other
// users of modernc.org/sqlite in the process) that prepares every
// connection of c: the key-hash function (for the migration to schema
// version 2), the pragmas, and the size cap.
func newDriver(c *connector) driver.Driver {
	d := &sqlite.Driver{}
	err := d.RegisterDeterministicScalarFunction("asdeliver_key_hash", 2,
		func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			kind, ok := args[0].(int64)
			if !ok {
				return nil, fmt.Errorf("asdeliver_key_hash: kind is %T, not an integer", args[0])
			}
			var key string
			switch k := args[1].(type) {
			case string:
				key = k
			case []byte:
				key = string(k)
			default:
				return nil, fmt.Errorf("asdeliver_key_hash: key is %T, not text", args[1])
			}
			return keyHash(kind, key), nil
		})
	if err != nil { // a new driver has no functions yet: not expected
		return failingDriver{fmt.Errorf("registering asdeliver_key_hash: %w", err)}
	}
	d.RegisterConnectionHook(func(conn sqlite.ExecQuerierContext, _ string) error {
		ctx := context.Background()
		for _, p := range c.pragmas {
			if _, err := conn.ExecContext(ctx, p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		if c.maxSize > 0 {
			pageSize, err := queryInt(ctx, conn, "PRAGMA page_size")
			if err != nil {
				return fmt.Errorf("PRAGMA page_size: %w", err)
			}
			p := c.maxPageCount(pageSize)
			if _, err := conn.ExecContext(ctx, p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	return d
}

// failingDriver is a driver that could not be prepared: every Open fails
// with err.
type failingDriver struct{ err error }

func (f failingDriver) Open(string) (driver.Conn, error) { return nil, f.err }

// queryInt returns the integer in the first column of the first row of
// query on a raw connection.
func queryInt(ctx context.Context, conn sqlite.ExecQuerierContext, query string) (int64, error) {
	rows, err := conn.QueryContext(ctx, query, nil)
	if err != nil {
		return 0, err
	}
	return firstInt(rows, query)
}

// isFull reports whether SQLite failed with SQLITE_FULL: the database
// reached max_page_count, or the disk is full.
func isFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}
