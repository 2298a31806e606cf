//go:build windows

package sqlite

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// flockExclusive tries to take an exclusive lock on the first byte of f
// (LockFileEx) without waiting. It reports held when another handle holds
// a lock on it: Windows locks belong to the handle, so a second open in
// the same process conflicts as well as one in another process. The lock
// file holds no data, so the lock keeps no reader out of anything.
func flockExclusive(f *os.File) (held bool, err error) {
	var ol windows.Overlapped
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return true, nil
	}
	return false, err
}
