//go:build !linux

package sqlite

import "os"

// datasync writes f to the disk: os.File.Sync, which on macOS asks the
// drive to flush its cache too (F_FULLFSYNC), as SQLite's fullfsync does.
func datasync(f *os.File) error {
	return f.Sync()
}
