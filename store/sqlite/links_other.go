//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package sqlite

import "os"

// unlinked reports whether the open file f no longer has a name; where the
// link count is not known, never.
func unlinked(*os.File) bool { return false }
