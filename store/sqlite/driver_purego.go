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
// connection of c.
func newDriver(c *connector) driver.Driver {
	d := &sqlite.Driver{}
	d.RegisterConnectionHook(func(conn sqlite.ExecQuerierContext, _ string) error {
		for _, p := range c.setup() {
			if _, err := conn.ExecContext(context.Background(), p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	return d
}

// isFull reports whether SQLite failed with SQLITE_FULL: the database
// reached max_page_count, or the disk is full.
func isFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}
