//go:build cgo

package sqlite

import (
	"database/sql/driver"
	"errors"
	"fmt"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// driverName is the database/sql name of the driver: go-sqlite3, SQLite's
// C library linked through cgo.
const driverName = "sqlite3"

// newDriver returns a go-sqlite3 driver that prepares every connection of
// c.
func newDriver(c *connector) driver.Driver {
	return &sqlite3.SQLiteDriver{ConnectHook: func(conn *sqlite3.SQLiteConn) error {
		for _, p := range c.setup() {
			if _, err := conn.Exec(p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	}}
}

// isFull reports whether SQLite failed with SQLITE_FULL: the database
// reached max_page_count, or the disk is full.
func isFull(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrFull
}
