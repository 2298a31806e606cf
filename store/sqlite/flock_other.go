//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd || windows)

package sqlite

import (
	"fmt"
	"os"
	"runtime"
)

// flockExclusive fails: this platform has no flock, and opening the store
// without the lock that keeps two schedulers off one file is not safe.
func flockExclusive(*os.File) (held bool, err error) {
	return false, fmt.Errorf("exclusive file locking is not implemented on %s", runtime.GOOS)
}
