//go:build cgo

package sqlite

import (
	"fmt"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// onCommit makes every commit on the raw connection dc ask rollback, and
// turn into a rollback when it says so.
func onCommit(dc any, rollback func() bool) error {
	conn, ok := dc.(*sqlite3.SQLiteConn)
	if !ok {
		return fmt.Errorf("the connection is a %T", dc)
	}
	conn.RegisterCommitHook(func() int {
		if rollback() {
			return 1
		}
		return 0
	})
	return nil
}
