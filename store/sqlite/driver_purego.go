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
// connection of c: the pragmas, and the size cap.
func newDriver(c *connector) driver.Driver {
	d := &sqlite.Driver{}
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
