package sqlite

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOpenLeavesForeignFileUnchanged opens files that belong to another
// application: each is refused, and neither the file nor its directory
// changes (no -wal, no -shm, no lock file left behind).
func TestOpenLeavesForeignFileUnchanged(t *testing.T) {
	tests := []struct {
		name string
		// setup is run on a fresh database connection to the file.
		setup []string
		// raw, when set, is the whole file instead.
		raw  string
		want string
		not  string
	}{
		{
			name:  "other application_id in rollback-journal mode",
			setup: []string{"PRAGMA application_id = 12345", "CREATE TABLE t (x)"},
			want:  "not an asdeliver store",
		},
		{
			name:  "other application_id without tables",
			setup: []string{"PRAGMA application_id = 12345"},
			want:  "not an asdeliver store",
		},
		{
			name:  "user_version 1 without application_id",
			setup: []string{"PRAGMA user_version = 1", "CREATE TABLE events (id TEXT)"},
			want:  "not an asdeliver store",
		},
		{
			name:  "user_version 2 without application_id",
			setup: []string{"PRAGMA user_version = 2", "CREATE TABLE items (x)", "CREATE TABLE queue (y)"},
			want:  "not an asdeliver store",
		},
		{
			name:  "user_version 2 without application_id or tables",
			setup: []string{"PRAGMA user_version = 2"},
			want:  "not an asdeliver store",
		},
		{
			name:  "tables without a schema version",
			setup: []string{"CREATE TABLE events (id TEXT)"},
			want:  "not an asdeliver store",
		},
		{
			name:  "newer user_version with another application_id",
			setup: []string{"PRAGMA application_id = 12345", "PRAGMA user_version = 4", "CREATE TABLE t (x)"},
			want:  "not an asdeliver store",
			not:   "upgrade",
		},
		{
			name:  "large user_version with another application_id",
			setup: []string{"PRAGMA application_id = 7", "PRAGMA user_version = 99"},
			want:  "not an asdeliver store",
			not:   "upgrade",
		},
		{
			name:  "other application in WAL mode",
			setup: []string{"PRAGMA journal_mode = WAL", "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"},
			want:  "not an asdeliver store",
		},
		{
			name: "not an SQLite file",
			raw:  "This is a text file, not a database. It is long enough to hold a header, and then some more words.\n",
			want: "not an SQLite database",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "other.db")
			if tt.raw != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.raw), 0o644))
			} else {
				db, err := sql.Open(driverName, path)
				require.NoError(t, err)
				for _, q := range tt.setup {
					_, err := db.Exec(q)
					require.NoError(t, err, q)
				}
				require.NoError(t, db.Close())
			}
			before, err := os.ReadFile(path)
			require.NoError(t, err)
			namesBefore := dirNames(t, dir)

			s, err := Open(path)
			if err == nil {
				_ = s.Close()
			}
			require.ErrorContains(t, err, tt.want)
			if tt.not != "" {
				require.NotContains(t, err.Error(), tt.not)
			}

			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after, "the file changed")
			require.Equal(t, namesBefore, dirNames(t, dir), "files appeared or vanished beside it")
		})
	}
}

// TestOpenAcceptsEmptyFile opens a file of zero bytes, as a tool that
// creates the file first leaves it: it becomes a store.
func TestOpenAcceptsEmptyFile(t *testing.T) {
	path := dbPath(t)
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	openStore(t, path, Options{})
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestOpenAcceptsStoreWithSchemaOnlyInLog opens a copy of a store taken
// while its schema was still only in the write-ahead log, as a crash right
// after the first Open leaves it: the file's own header has no application
// id yet, and Open must read through the log to recognise it.
func TestOpenAcceptsStoreWithSchemaOnlyInLog(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, Options{})
	_ = s

	head, err := os.ReadFile(path)
	require.NoError(t, err)
	if len(head) >= 72 && string(head[68:72]) != "\x00\x00\x00\x00" {
		t.Skip("the schema reached the file itself already")
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(copyPath+suffix, b, 0o644))
	}
	openStore(t, copyPath, Options{})
}
