// Package sqlite is the embedded default store of the asdeliver scheduler: a
// store.Store kept in one SQLite file. With cgo it uses SQLite's C library
// (github.com/mattn/go-sqlite3); built with CGO_ENABLED=0 it uses
// modernc.org/sqlite, with the same file format, behaviour and tests.
//
// Guarantees:
//
//   - Durability: a method that changes state returns once its SQLite
//     transaction has committed in WAL mode and, under SynchronousFull (the
//     default), once the log holding it is synced, so it survives a power
//     loss. A call's changes are stored whole or not at all. A call whose
//     context ends before the writer takes it changes nothing and returns
//     the context's error. After a failed sync every call, reads included,
//     fails until the store is reopened.
//   - One owner: Open takes an exclusive lock on path + ".lock" (flock, or
//     LockFileEx on Windows), so a second Open of the file, in any
//     process, fails at once with ErrLocked.
//   - Transaction IDs never repeat: they increase per service across
//     reopen, and a service's first ID is the time in microseconds, so even
//     a recreated file does not reuse an ID.
//   - Forward migration: Open converts the schema of an earlier version,
//     refuses a newer one with ErrSchemaTooNew, and leaves a file that is
//     not an asdeliver store byte for byte as it was.
//   - A file removed while open stops acknowledging (ErrRemoved).
//   - Bounded disk: item bytes are stored once, however many services take
//     them. Moments after a backlog drains, the file is back to the size of
//     what is pending plus about 2 MiB (incremental vacuum in steps between
//     the writer's batches, then a TRUNCATE checkpoint); a checkpointer
//     keeps the -wal file short, at most 64 MiB after a checkpoint; and
//     Options.MaxSize caps the file: Append then fails with ErrFull.
//   - No read transaction is held between calls, so nothing blocks a
//     checkpoint while the scheduler PUTs a transaction.
//
// A Store is safe for concurrent use. One writer goroutine, with its own
// connection, runs the calls that change state: it merges the calls
// waiting, and those that arrive while its transaction is young, into one
// SQLite transaction and one commit (writer.go), and a syncer goroutine
// syncs the log and answers them while the writer runs the next
// (syncer.go). Txns and Backlogs read on a second connection.
//
// An Append is stored as a few rows whatever its size (layout.go), and a
// transaction is a range of a service's items, so forming one writes a row
// and completing it deletes a few. The keys that deduplicate appends are
// kept in memory, about 24 bytes per pending keyed item, rebuilt at Open
// (keys.go).
//
// Append copies the Data it is given; the Data of the items NextTxn
// returns may be shared with another service's transaction, so callers
// must not modify it.
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
	"net/url"
	"os"
	"path/filepath"
	"slices"
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

// ErrRemoved is returned by every call once the database file or its -wal
// file (or their directory) has been removed while the store is open: a
// restart would not find what is written to them. Under SynchronousFull
// the check follows every sync of the log; SynchronousNormal has no such
// sync, and no check. Restore the files and reopen.
var ErrRemoved = errors.New("sqlite: the database file was removed while the store was open")

// Synchronous says how hard SQLite works to make a commit durable before the
// call that made it returns.
type Synchronous int

const (
	// SynchronousFull makes every commit survive a power loss or an
	// operating system crash: no call returns before the log holding its
	// commit is synced (fdatasync). It is the zero value and the default.
	SynchronousFull Synchronous = iota
	// SynchronousNormal makes commits survive a crash of the process (a
	// kill -9 loses nothing), but a power loss may lose the last ones.
	// Faster; pick it only if the homeserver's own database makes the
	// same trade.
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

// journalSizeLimit caps the -wal file left on disk after a checkpoint.
const journalSizeLimit = 64 << 20

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
	// Append that would pass it fails with ErrFull and stores nothing,
	// while transactions are still formed and completed, each freeing
	// room. Appends stop short of the cap by 1/16 of it (at most 1 MiB),
	// kept for the bookkeeping of the drain. The -wal file is not counted.
	// A larger file refuses appends until it drains. When set it must be
	// at least MinMaxSize. Defaults to 0: no cap.
	MaxSize int64
}

// MinMaxSize is the smallest Options.MaxSize OpenWithOptions accepts.
const MinMaxSize = 1 << 20

// Store is a store.Store kept in one SQLite file. Create it with Open or
// OpenWithOptions and release it with Close.
type Store struct {
	path string

	// mu guards closed: methods hold it for reading while they run, so
	// Close, which takes it for writing, waits for calls in flight.
	mu     sync.RWMutex
	closed bool

	db   *sql.DB // the writer's connection
	rdb  *sql.DB // the reader's: Txns and Backlogs
	lock *os.File
	st   *statements
	w    *writer
	ckpt *checkpointer
	sync *syncer // nil under SynchronousNormal: the writer answers at once

	pageSize       int64
	appendMaxPages int64        // pages in use Append may leave; 0: no cap
	keySeed        maphash.Seed // seeds the sums of pending keys
	now            func() time.Time
}

var (
	_ store.Store           = (*Store)(nil)
	_ store.OrderedAppender = (*Store)(nil)
	_ io.Closer             = (*Store)(nil)
)

// Open opens the store in the SQLite file at path, creating the file if it
// does not exist, takes an exclusive lock on it and migrates its schema:
// OpenWithOptions(path, Options{}). It fails with ErrLocked while another
// Store has the file open, with ErrSchemaTooNew for a file of a newer
// version, and with an error saying so for a file that is not an
// asdeliver store, to which it writes nothing.
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
// links resolved, as SQLite resolves them, so that two names of one file
// get one lock and the log synced is SQLite's. A link to a file that does
// not exist yet resolves to where the file will be.
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

// lockFile creates or opens path + ".lock", takes an exclusive lock on it
// (held per open file, so a second open in this process conflicts too),
// and reports whether it created the file.
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
	// A connection for the writer and one for reads, kept open for the
	// life of the Store. The reader's transactions are deferred: it never
	// takes the write lock.
	writer := &connector{dsn: dsn(s.path, "immediate"), pragmas: pragmas(opts)}
	s.db = oneConn(writer)
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
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&s.pageSize); err != nil {
		return fmt.Errorf("reading the page size: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	// The file lock proves every lease in the file belongs to a holder
	// that is gone: free them, so a restarted scheduler claims at once.
	// max_epoch stays, so old epochs stay stale.
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
		// The cap is set once the free pages are given back: SQLite keeps
		// it at least at the size the file has when it is set, and a
		// migration may briefly have doubled that. A reconnection sets it
		// too.
		p := fmt.Sprintf("PRAGMA max_page_count = %d", opts.MaxSize/s.pageSize)
		if _, err := s.db.ExecContext(ctx, p); err != nil {
			return err
		}
		writer.also(p)
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

// migrate migrates the schema with temporary storage on disk while it
// runs: a conversion builds indexes as large as the backlog. It runs
// before the cap of Options.MaxSize is set, so that a file an outage
// filled to its cap still opens.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, "PRAGMA temp_store = FILE"); err != nil {
		return err
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

// dsn is the data source name for the file at path: a URI, so that any
// character is allowed in the path, with txlock the kind of transaction
// BEGIN starts: "immediate" takes the write lock at once, "deferred" reads.
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
		// SQLite's default page cache, 2 MiB: batches are read in order,
		// recent ones from the writer's memory.
		"PRAGMA cache_size = -2048",
		// SQLite's own checkpoint, at 8192 pages of log: a backstop behind
		// the checkpointer.
		"PRAGMA wal_autocheckpoint = 8192",
		// The schema keeps its references by code, not by foreign keys:
		// checking them would cost a lookup per queued row.
		"PRAGMA foreign_keys = OFF",
		// Temporary tables and indexes (a sort the planner may want) stay
		// in memory: they are small, and a file costs a write per page.
		"PRAGMA temp_store = MEMORY",
	}
}

// connector opens connections of the SQLite driver (see newDriver) and
// runs the pragmas on each, so that a connection database/sql opens again
// after an error is configured like the first.
type connector struct {
	dsn string

	mu      sync.Mutex
	pragmas []string

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

// setup returns the statements that configure a new connection, in order.
func (c *connector) setup() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pragmas
}

// also adds p to the statements of every later connection.
func (c *connector) also(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pragmas = append(slices.Clip(c.pragmas), p)
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
	_ = s.w.run.Stop(context.Background())
	if err := s.release(); err != nil {
		return fmt.Errorf("error closing sqlite store %s: %w", s.path, err)
	}
	return nil
}

// release ends, once the writer has, what open started: the goroutines,
// the statements, the connections, and last the lock.
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

// readTx runs fn in one read transaction on the reader's connection. When
// ctx ended during the call, the error matches ctx's error.
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
