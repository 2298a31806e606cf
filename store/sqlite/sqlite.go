// Package sqlite is the embedded default store of the asdeliver scheduler: a
// store.Store kept in one SQLite file. With cgo it links SQLite's C library
// through github.com/mattn/go-sqlite3; built with CGO_ENABLED=0 it uses
// modernc.org/sqlite, SQLite translated to Go, with the same file format,
// behaviour and tests (about 0.6 to 0.9 of the cgo speed; see the README).
// The lock that keeps one scheduler per file is flock on Linux, macOS and
// the BSDs and LockFileEx on Windows; elsewhere Open fails.
//
// Guarantees:
//
//   - Durability: every method that changes state does so inside one
//     SQLite transaction, committed in WAL mode, and returns only once it
//     has committed and, by default (SynchronousFull), once the log holding
//     the commit has been synced to disk, so what a method reported as done
//     survives a crash of the process and, with the default, a power
//     loss. Either all of a call's changes are stored or none: concurrent
//     calls may share a transaction (see below); a call that fails before
//     it writes (a stale epoch, a held lease, a full store) fails alone,
//     and one whose writes fail (a full disk, an I/O error) undoes the
//     transaction, whose other calls run again in the next one.
//   - One owner: Open takes an exclusive, non-blocking lock on a side file
//     (path + ".lock"). A second Open of the same file, in this process or
//     another, fails at once with an error matching ErrLocked, so two
//     schedulers never deliver from one file. The lock is released by Close
//     or when the process ends.
//   - Transaction IDs never repeat: they are stored per service and keep
//     increasing across reopen, also when nothing is pending, and a
//     service's first ID is the current time in microseconds, so even a
//     deleted and recreated file does not hand an application service an ID
//     it has already seen.
//   - Item bytes are written once, however many services want the item, and
//     deleted when the last of them completes or purges it.
//   - The schema is versioned and migrated forward by Open; a file written
//     by a newer version is refused with ErrSchemaTooNew rather than misread.
//   - A store whose file (or whole directory) is removed while it is open
//     stops acknowledging: under SynchronousFull, every call after the sync
//     that finds the file without a name fails with ErrRemoved, since a
//     restart would find none of what it wrote.
//   - A file that belongs to something else (another application_id, a
//     schema version or tables without asdeliver's application_id, or no
//     SQLite database at all) is refused before anything is written to it,
//     and left byte for byte as it was: Open reads its header and opens it
//     read-only to decide. Only for such a database in WAL mode with a
//     non-empty -wal file beside it may SQLite create its -shm file while
//     reading.
//   - The file stays compact: a backlog that drains gives its space back to
//     the file system, so repeated outages do not make the file grow. The
//     database runs with incremental auto-vacuum; once Complete or Purge
//     calls leave 1 MiB of free pages, the writer gives them back in steps
//     of up to 4 MiB, each its own SQLite transaction, between the batches
//     of calls: when no call is waiting, or, under a load that never
//     pauses, once 8 MiB are free. So no call waits for more than one step,
//     and the free pages stay bounded. After such a step, and once no
//     call has come for 50 ms after calls that freed pages, it checks the
//     files: when the file and its write-ahead log on disk have become
//     1 MiB larger than the database, it checkpoints the log in TRUNCATE
//     mode, which shrinks the file and empties the log. Moments after a
//     backlog drains, the file is back to the size of what is still
//     pending plus at most about 2 MiB. Open gives back every free page.
//   - The write-ahead log stays short: a checkpointer goroutine copies it
//     into the database file every 64 commits, on a connection of its own,
//     while the writer goes on writing. SQLite's automatic checkpoint
//     (wal_autocheckpoint, at 32 MiB of log) stays as a backstop, and the
//     -wal file is cut back to 64 MiB (journal_size_limit) or less after a
//     checkpoint.
//   - Checkpoints are not starved by readers: the store holds no read
//     transaction between calls. Every method reads its rows to the end and
//     ends its SQLite transaction before it returns, so nothing is held
//     open while the scheduler PUTs a transaction to an application
//     service. Only another program reading the file (a sqlite3 shell with
//     a transaction open, say) can hold one; the store's own checkpoints do
//     not wait for it.
//   - Options.MaxSize caps the file: Append then fails with ErrFull rather
//     than fill the disk, and changes nothing; delivering the backlog frees
//     room again.
//
// A Store is safe for concurrent use. SQLite has one writer at a time, so
// the Store has one writer goroutine, with a connection of its own, that
// runs the calls that change state (Append, Claim, Release, NextTxn,
// Complete, Purge): it takes every call waiting,
// and the calls that arrive while its transaction is young, up to 256, and
// runs them in the order they were made, in one SQLite transaction with
// one commit, then tells each call its outcome.
// Concurrent callers (the scheduler's committer appending, the services
// forming and completing transactions) thus share one sync instead of
// queueing for one each. The sync is not the writer's: SQLite runs with
// synchronous=NORMAL, and under SynchronousFull a syncer goroutine syncs
// the log after each commit and only then answers its calls, while the
// writer already runs the next transaction; one sync covers every commit
// written before it began. A failed sync fails its calls and every later
// call, reads included, until the store is reopened. A call whose
// context ends while it waits for the writer returns the context's error
// and changes nothing; once the writer has taken it, it reports its real
// outcome. Txns and Backlogs read on a second connection, which in WAL
// mode sees the last commit while the writer writes (possibly one whose
// sync is still under way).
//
// An Append is stored as a few rows whatever its size: its items as one
// row of bytes (a few for a large call), and per service that takes some
// of them one row that says which (see layout.go). A transaction is a
// range of a service's items, so forming one writes a row and completing
// it deletes a few. The keys that deduplicate appends are kept in memory,
// per service, rebuilt from the stored items at Open: about 20 bytes per
// pending keyed item (a million pending events, 20 MB). The writer also
// keeps the bytes of the last 8 MiB of items stored, so that NextTxn
// usually forms a transaction without reading back what Append has just
// written.
//
// Append copies the Data it is given, so a caller may reuse its buffers at
// once; the Data of the items NextTxn returns may be shared with another
// service's transaction, so callers must not modify it.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// ErrLocked is returned (wrapped, with the path) by Open and OpenWithOptions
// when another Store, in this process or another, has the file open.
var ErrLocked = errors.New("sqlite: database file is in use by another scheduler")

// ErrSchemaTooNew is returned (wrapped, naming both versions) by Open and
// OpenWithOptions when the file was written by a newer version of this
// package, whose schema this version does not know. Upgrade the program.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this version supports")

// ErrFull is returned (wrapped) by Append when the call would take the
// database past Options.MaxSize, and by any method when SQLite reports that
// the database or the disk is full (SQLITE_FULL). The call changed nothing;
// what was stored before is intact. Space comes back as the application
// services are delivered to: each completed transaction frees its items.
var ErrFull = errors.New("sqlite: database is full")

// ErrRemoved is returned by every call, once the database file or its
// -wal file has been removed (or the directory holding them) while the
// store is open: what SQLite writes to them then would be lost at the next
// restart, so nothing more is acknowledged. Under SynchronousFull (the
// default) the check follows every sync of the log, so the first call
// whose commit went into a removed file fails; under SynchronousNormal
// there is no such sync, and no check. Restore the files and reopen.
var ErrRemoved = errors.New("sqlite: the database file was removed while the store was open")

// Synchronous says how hard SQLite works to make a commit durable before the
// call that made it returns.
type Synchronous int

const (
	// SynchronousFull makes every commit survive a power loss or an
	// operating system crash: no call returns before the write-ahead log
	// holding its commit has been synced (fdatasync), as SQLite's
	// synchronous=FULL does. It is the zero value and the default.
	SynchronousFull Synchronous = iota
	// SynchronousNormal makes commits survive a crash of the process (a
	// kill -9 loses nothing), but in WAL mode a power loss or an operating
	// system crash may lose the last commits: SQLite syncs only at
	// checkpoints. Faster; pick it only if the homeserver's own database
	// makes the same trade.
	SynchronousNormal
)

// String returns the name of the mode: "FULL" or "NORMAL", as SQLite
// names its synchronous settings.
func (s Synchronous) String() string {
	switch s {
	case SynchronousFull:
		return "FULL"
	case SynchronousNormal:
		return "NORMAL"
	}
	return fmt.Sprintf("Synchronous(%d)", int(s))
}

// DefaultBusyTimeout is the default of Options.BusyTimeout.
const DefaultBusyTimeout = 5 * time.Second

// journalSizeLimit caps the write-ahead log file left on disk after a
// checkpoint, so that one burst does not keep a huge file around.
const journalSizeLimit = 64 << 20

// cacheSizeKiB is SQLite's page cache per connection (PRAGMA cache_size, in
// KiB when negative): SQLite's default. The store reads few pages at random
// (batches are read in order, recent ones from the writer's memory), and
// the operating system caches the file anyway.
const cacheSizeKiB = 2 << 10

// walAutocheckpointPages is how many pages the write-ahead log holds before
// SQLite itself copies them into the database file (PRAGMA
// wal_autocheckpoint): a backstop behind the checkpointer, which does so
// every checkpointEvery commits. 8192 pages of 4 KiB is 32 MiB.
const walAutocheckpointPages = 8192

// Options tune OpenWithOptions. The zero value means the defaults, which is
// what Open uses.
type Options struct {
	// Synchronous chooses the durability of a commit: SynchronousFull
	// survives a power loss, SynchronousNormal only a process crash.
	// Defaults to SynchronousFull.
	Synchronous Synchronous
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection to the file (say, an operator's sqlite3 shell) before it
	// fails. Defaults to DefaultBusyTimeout (5s); must not be negative.
	BusyTimeout time.Duration
	// MaxSize caps the database in bytes (SQLite's max_page_count), for an
	// operator who would rather refuse new events than fill the disk: an
	// Append that would take the database past the cap fails with ErrFull
	// and stores nothing, while forming and completing transactions go on,
	// and every delivered transaction frees room for new ones. Appends stop
	// short of the cap by a reserve of 1/16 of it (at most 1 MiB), which
	// keeps room for the bookkeeping of the transactions that drain the
	// backlog. The -wal file beside the database is not counted (see the
	// package doc for its size). A file that is already larger keeps its
	// size, and refuses appends, until it drains. When set it must be at
	// least MinMaxSize. Defaults to 0: no cap beyond the disk's own size.
	MaxSize int64
}

// MinMaxSize is the smallest Options.MaxSize OpenWithOptions accepts.
const MinMaxSize = 1 << 20

// Store is a store.Store kept in one SQLite file. Create it with Open or
// OpenWithOptions and release it with Close.
type Store struct {
	path string

	// mu guards closed: methods hold it for reading while they run, Close
	// takes it for writing, so Close waits for calls in flight and every
	// later call sees closed.
	mu     sync.RWMutex
	closed bool

	// db is the writer's connection: only the writer goroutine uses it
	// once Open has returned. rdb is a second connection, for the calls
	// that only read (Txns, Backlogs): in WAL mode it reads the last
	// committed state while the writer writes.
	db   *sql.DB
	rdb  *sql.DB
	lock *os.File
	st   *statements
	w    *writer
	ckpt *checkpointer
	// sync answers the writer's calls once their commit is on disk, under
	// SynchronousFull; nil under SynchronousNormal, where the writer
	// answers at once.
	sync *syncer

	pageSize int64 // bytes per database page
	// appendMaxPages is how many pages in use Append may leave (MaxSize
	// less the reserve); 0 when there is no cap.
	appendMaxPages int64

	// keySeed seeds the sums of pending keys (see pendingKeys).
	keySeed maphash.Seed

	// now is the clock; tests replace it.
	now func() time.Time
}

var (
	_ store.Store           = (*Store)(nil)
	_ store.OrderedAppender = (*Store)(nil)
	_ io.Closer             = (*Store)(nil)
)

// Open opens the store in the SQLite file at path, creating the file if it
// does not exist, takes an exclusive lock on it and migrates its schema. It
// is OpenWithOptions(path, Options{}). A second Open of the same path while
// this one is open fails with an error matching ErrLocked; a file written by
// a newer version fails with ErrSchemaTooNew; a file that is not an
// asdeliver store (nor empty) fails with an error saying so, and Open
// writes nothing to it.
func Open(path string) (*Store, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions is Open with options. Beside the file at path it keeps
// path + ".lock" (the lock; left on disk after Close) and SQLite's
// path + "-wal" and path + "-shm".
func OpenWithOptions(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("error opening sqlite store: empty path: pass the name of the database file")
	}
	if opts.Synchronous != SynchronousFull && opts.Synchronous != SynchronousNormal {
		return nil, fmt.Errorf("error opening sqlite store: Options.Synchronous is %v: use SynchronousFull or SynchronousNormal", opts.Synchronous)
	}
	if opts.BusyTimeout < 0 {
		return nil, fmt.Errorf("error opening sqlite store: Options.BusyTimeout is negative (%v): use 0 for the default", opts.BusyTimeout)
	}
	if opts.BusyTimeout == 0 {
		opts.BusyTimeout = DefaultBusyTimeout
	}
	if opts.MaxSize < 0 || (opts.MaxSize > 0 && opts.MaxSize < MinMaxSize) {
		return nil, fmt.Errorf("error opening sqlite store: Options.MaxSize is %d: use 0 for no cap, or at least MinMaxSize (%d bytes)", opts.MaxSize, MinMaxSize)
	}
	abs, err := realPath(path)
	if err != nil {
		return nil, fmt.Errorf("error opening sqlite store %s: %w", path, err)
	}

	// Lock before SQLite touches the file, so two openers never migrate or
	// write concurrently.
	lock, created, err := lockFile(abs)
	if err != nil {
		return nil, err
	}
	// Decide whether the file is ours before anything writes to it.
	if err := probe(abs); err != nil {
		if created {
			_ = os.Remove(lock.Name())
		}
		_ = lock.Close()
		return nil, fmt.Errorf("error opening sqlite store %s: %w", abs, err)
	}
	s := &Store{path: abs, lock: lock, now: time.Now, w: newWriter()}
	if err := s.open(opts); err != nil {
		_ = s.release()
		return nil, fmt.Errorf("error opening sqlite store %s: %w", abs, err)
	}
	return s, nil
}

// realPath returns the absolute path of the file at path with symbolic
// links resolved, as SQLite resolves them: two names of one file then get
// one lock, and the log SQLite keeps beside the real file is the one
// synced. A link to a file that does not exist yet resolves to where the
// file will be.
func realPath(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	for range 40 { // as Linux's limit on links in a path
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			dir, err := filepath.EvalSymlinks(filepath.Dir(p))
			if err != nil {
				return "", err
			}
			return filepath.Join(dir, filepath.Base(p)), nil
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink == 0:
			return filepath.EvalSymlinks(p)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// lockFile creates or opens path + ".lock" and takes an exclusive flock on
// it, and reports whether it created the file. flock locks belong to the
// open file description, so a second open in the same process conflicts as
// well as one in another process.
func lockFile(path string) (f *os.File, created bool, err error) {
	name := path + ".lock"
	f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	created = err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	}
	if err != nil {
		return nil, false, fmt.Errorf("error opening sqlite store %s: creating lock file: %w", path, err)
	}
	held, err := flockExclusive(f)
	if err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("error opening sqlite store %s: locking %s: %w", path, name, err)
	}
	if held {
		_ = f.Close()
		return nil, false, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	return f, created, nil
}

// open opens the database, checks the pragmas, migrates, prepares the
// statements and starts the writer goroutine.
func (s *Store) open(opts Options) error {
	// One connection for the writer, another for reads, each kept open for
	// the life of the Store: the pragmas set by the connector hold for all
	// calls, and statements are prepared once. The reader's transactions
	// are deferred, so that it never takes the write lock, and it refuses
	// to write.
	s.db = oneConn(&connector{
		dsn:     dsn(s.path, "immediate"),
		pragmas: pragmas(opts),
		maxSize: opts.MaxSize,
	})
	s.rdb = oneConn(&connector{
		dsn:     dsn(s.path, "deferred"),
		pragmas: append(pragmas(opts), "PRAGMA query_only = ON"),
	})

	ctx := context.Background()
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, not wal: is the file on a file system without shared memory support?", mode)
	}
	// Migrations do not change the page size: it is set when the file is
	// created.
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&s.pageSize); err != nil {
		return fmt.Errorf("reading the page size: %w", err)
	}
	if err := s.migrate(ctx, opts); err != nil {
		return err
	}
	// The file lock proves no other process has this file open, so every
	// lease in it belongs to a holder that is gone (a crash, or a Close
	// without Release). Free them, so a restarted scheduler claims its
	// services at once instead of after the lease's ttl. max_epoch stays:
	// the next grant still gets a higher epoch and old ones stay stale.
	if _, err := s.db.ExecContext(ctx, `UPDATE services SET lease_owner = '', lease_epoch = 0, lease_expires = 0 WHERE lease_epoch != 0`); err != nil {
		return fmt.Errorf("freeing the leases of earlier processes: %w", err)
	}
	if opts.MaxSize > 0 {
		maxPages := opts.MaxSize / s.pageSize
		s.appendMaxPages = maxPages - min(maxPages/16, (1<<20)/s.pageSize)
	}
	s.ckpt = newCheckpointer(oneConn(&connector{
		dsn:     dsn(s.path, "deferred"),
		pragmas: append(pragmas(opts), "PRAGMA query_only = ON", "PRAGMA busy_timeout = 0"),
	}))
	s.ckpt.run.Go(func(context.Context) { s.ckpt.loop() })
	st, err := prepare(ctx, s.db, s.rdb)
	if err != nil {
		return err
	}
	s.st = st
	s.keySeed = maphash.MakeSeed()
	if s.w.mem, err = loadMemory(ctx, s.db, s.keySeed); err != nil {
		return fmt.Errorf("reading the pending items: %w", err)
	}
	// Whatever an earlier process left free goes back to the file system.
	if err := s.compact(ctx); err != nil {
		return fmt.Errorf("giving free pages back to the file system: %w", err)
	}
	if opts.MaxSize > 0 {
		// The cap comes back once the free pages are given back: SQLite
		// keeps it at least at the size the file has when it is set, and
		// a migration may briefly have doubled that.
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", opts.MaxSize/s.pageSize)); err != nil {
			return err
		}
	}
	if opts.Synchronous == SynchronousFull {
		// s.path is resolved as SQLite resolves it (realPath), so its log
		// is s.path + "-wal".
		if s.sync, err = newSyncer(s.path); err != nil {
			return err
		}
		s.sync.run.Go(func(context.Context) { s.sync.loop() })
	}
	s.w.run.Go(func(context.Context) { s.runWriter() })
	return nil
}

// migrate migrates the schema on the writer's connection, without the cap
// of Options.MaxSize and with temporary storage on disk while it runs: a
// migration may briefly hold two copies of a table (version 2 rebuilds
// the queue), and builds indexes as large as the backlog. A file an
// outage filled to its cap must still open.
func (s *Store) migrate(ctx context.Context, opts Options) error {
	if _, err := s.db.ExecContext(ctx, "PRAGMA temp_store = FILE"); err != nil {
		return err
	}
	if opts.MaxSize > 0 {
		// SQLite caps the value at its own maximum.
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", math.MaxUint32)); err != nil {
			return err
		}
	}
	if err := migrate(ctx, s.db); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, "PRAGMA temp_store = MEMORY")
	return err
}

// oneConn returns a pool of one connection made by c, kept open.
func oneConn(c *connector) *sql.DB {
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db
}

// dsn is the go-sqlite3 data source name for the file at path: a URI, so
// that any character is allowed in the path, with txlock the kind of
// transaction BEGIN starts. The writer's are "immediate": a transaction
// takes the write lock at once instead of failing on upgrade when another
// connection writes. The reader's are "deferred": they only read.
func dsn(path, txlock string) string {
	return "file:" + escapePath(path) + "?_txlock=" + txlock
}

// escapePath escapes path for an SQLite URI.
func escapePath(path string) string {
	u := url.URL{Path: path}
	return u.EscapedPath()
}

// pragmas lists the statements that configure every new connection, in
// order. auto_vacuum comes first: it only takes effect before the first
// table is created.
func pragmas(opts Options) []string {
	return []string{
		fmt.Sprintf("PRAGMA busy_timeout = %d", opts.BusyTimeout.Milliseconds()),
		"PRAGMA auto_vacuum = INCREMENTAL",
		"PRAGMA journal_mode = WAL",
		// SQLite's NORMAL in both modes: under SynchronousFull the syncer
		// syncs the log after each commit, off the writer's path.
		"PRAGMA synchronous = NORMAL",
		fmt.Sprintf("PRAGMA journal_size_limit = %d", journalSizeLimit),
		fmt.Sprintf("PRAGMA cache_size = %d", -cacheSizeKiB),
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walAutocheckpointPages),
		// The schema keeps its references by code, not by foreign keys:
		// checking them would cost a lookup per queued row.
		"PRAGMA foreign_keys = OFF",
		// Temporary tables and indexes (a sort the planner may want) stay
		// in memory: they are small, and a file costs a write per page.
		"PRAGMA temp_store = MEMORY",
	}
}

// connector opens connections of the SQLite driver (go-sqlite3 with cgo,
// modernc.org/sqlite without: see newDriver) and runs the pragmas on each,
// so that a connection database/sql opens again after an error is
// configured like the first. maxSize, when positive, becomes
// max_page_count in the file's own page size.
type connector struct {
	dsn     string
	pragmas []string
	maxSize int64

	once sync.Once
	drv  driver.Driver // newDriver(c), made once
}

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	return c.Driver().Open(c.dsn)
}

func (c *connector) Driver() driver.Driver {
	c.once.Do(func() { c.drv = newDriver(c) })
	return c.drv
}

// firstInt returns the integer in the first column of the first row of
// rows, the answer to query, and closes rows.
func firstInt(rows driver.Rows, query string) (int64, error) {
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(dest); err != nil {
		return 0, err
	}
	n, ok := dest[0].(int64)
	if !ok {
		return 0, fmt.Errorf("%s returned %T, not an integer", query, dest[0])
	}
	return n, nil
}

// maxPageCount returns the pragma that caps the file at c.maxSize for a
// page size, "" without a cap. SQLite keeps a cap below the current size
// at the current size.
func (c *connector) maxPageCount(pageSize int64) string {
	if c.maxSize <= 0 || pageSize <= 0 {
		return ""
	}
	return fmt.Sprintf("PRAGMA max_page_count = %d", c.maxSize/pageSize)
}

// Close closes the database and releases the lock, after the calls in
// flight have returned, and stops the writer goroutine. Later calls of
// every method return store.ErrClosed. Closing a closed Store does nothing
// and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// No call is in flight: the writer's queue is empty or holds withdrawn
	// requests. It ends after the step of compaction it may be running.
	_ = s.w.run.Stop(context.Background())
	if err := s.release(); err != nil {
		return fmt.Errorf("error closing sqlite store %s: %w", s.path, err)
	}
	return nil
}

// release ends, once the writer has, what open started, skipping what it
// did not get to: the goroutines, the statements, the connections, and
// last the lock. Every call has been answered, so the syncer owes nothing.
func (s *Store) release() error {
	var errs []error
	var ckptDB *sql.DB
	if s.ckpt != nil {
		_ = s.ckpt.run.Stop(context.Background())
		ckptDB = s.ckpt.db
	}
	if s.sync != nil {
		_ = s.sync.run.Stop(context.Background())
		errs = append(errs, s.sync.close())
	}
	if s.st != nil {
		errs = append(errs, s.st.close())
	}
	// The reader first: the last connection to close checkpoints the log
	// and removes it, which the reader may not do.
	for _, db := range []*sql.DB{s.rdb, ckptDB, s.db} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	// Only now that SQLite has closed the file may another opener have it.
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

// enter starts a method call: it checks ctx, then that the store is open
// and has not failed to sync, and holds the store open until the returned
// function is called.
func (s *Store) enter(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, store.ErrClosed
	}
	if err := s.syncFailed(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	return s.mu.RUnlock, nil
}

// enterService is enter for a method on one service, which it also checks
// is named; its errors begin with op.
func (s *Store) enterService(ctx context.Context, op, service string) (func(), error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if service == "" {
		release()
		return nil, fmt.Errorf("%s: %w", op, invalid("empty service ID"))
	}
	return release, nil
}

// syncFailed returns the error of a failed sync of the log, or nil.
func (s *Store) syncFailed() error {
	if s.sync == nil {
		return nil
	}
	return s.sync.failed()
}

// readTx runs fn in one read transaction on the reader's connection, so
// that its queries see one committed state, and ends it. When ctx ended
// during the call, the error matches ctx's error whatever the driver
// reported.
func (s *Store) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err == nil {
		err = fn(tx)
		if rerr := tx.Rollback(); err == nil {
			err = rerr
		}
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%w: %w", cerr, err)
		}
		return fullErr(err)
	}
	return nil
}
