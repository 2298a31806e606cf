package sqlite

import (
	"errors"
	"os"
	"syscall"
)

// datasync writes f's data, and the metadata needed to read it back, to
// the disk: fdatasync, as SQLite itself uses on Linux.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
