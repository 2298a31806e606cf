//go:build !cgo

package sqlite

import (
	"fmt"

	"modernc.org/sqlite"
)

// onCommit makes every commit on the raw connection dc ask rollback, and
// turn into a rollback when it says so.
func onCommit(dc any, rollback func() bool) error {
	conn, ok := dc.(sqlite.HookRegisterer)
	if !ok {
		return fmt.Errorf("the connection is a %T", dc)
	}
	conn.RegisterCommitHook(func() int32 {
		if rollback() {
			return 1
		}
		return 0
	})
	return nil
}
