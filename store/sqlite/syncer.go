package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/asdeliver/scheduler/internal/lifecycle"
)

// errSyncFailed marks the error of every call, reads included, after the
// write-ahead log failed to sync: the operating system may have dropped
// the pages it could not write, so no later sync proves anything, and a
// commit is readable before its sync. Reopening reads what is on disk.
var errSyncFailed = errors.New("sqlite: syncing the write-ahead log failed earlier; reopen the store")

// syncer makes the writer's commits durable off the writer's path. Under
// SynchronousFull the connections run with synchronous=NORMAL, so a COMMIT
// returns once its pages are in the write-ahead log; the syncer then syncs
// the log (fdatasync) and only then answers the commit's calls, while the
// writer runs the next transaction. One sync covers every commit written
// before it began: the log is written in order, and SQLite syncs it itself
// before a checkpoint copies it and before it reuses the file.
type syncer struct {
	wal      *os.File             // the -wal file, read-only: fsync needs no write access
	db       *os.File             // the database file, to check it has a name (ErrRemoved)
	datasync func(*os.File) error // tests replace it

	mu   sync.Mutex
	owed []answer // calls whose commit is written, waiting for a sync
	err  error    // the first sync failure; sticky

	kick chan struct{}    // capacity 1: owed is not empty
	run  *lifecycle.Group // owns the syncer goroutine; Close stops it after the writer
}

// answer is the outcome of one call, to send once its commit is synced.
type answer struct {
	r   *request
	err error
}

// newSyncer opens the write-ahead log of the database file SQLite has
// open as dbFile (symbolic links resolved): it exists once the database is
// in WAL mode, for as long as a connection is open.
func newSyncer(dbFile string) (*syncer, error) {
	wal, err := os.Open(dbFile + "-wal")
	if err != nil {
		return nil, fmt.Errorf("opening the write-ahead log to sync it: %w", err)
	}
	db, err := os.Open(dbFile)
	if err != nil {
		_ = wal.Close()
		return nil, fmt.Errorf("opening the database file to watch it: %w", err)
	}
	return &syncer{
		wal:      wal,
		db:       db,
		datasync: datasync,
		kick:     make(chan struct{}, 1),
		run:      lifecycle.New(context.Background()),
	}, nil
}

// failed returns the sticky error of an earlier failed sync, or nil.
func (y *syncer) failed() error {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.err
}

// after queues the outcomes of the calls of a commit that SQLite has
// written, to be answered once the log is synced.
func (y *syncer) after(held []*request, errs []error) {
	y.mu.Lock()
	for i, r := range held {
		y.owed = append(y.owed, answer{r, errs[i]})
	}
	y.mu.Unlock()
	lifecycle.Poke(y.kick)
}

// loop is the syncer goroutine. Close stops it after the writer, when
// every call has been answered.
func (y *syncer) loop() {
	for {
		select {
		case <-y.kick:
		case <-y.run.Stopping():
			return
		}
		y.mu.Lock()
		owed := y.owed
		y.owed = nil
		failed := y.err
		y.mu.Unlock()
		if len(owed) == 0 {
			continue // a kick for commits an earlier sync covered
		}
		if failed == nil {
			if err := y.datasync(y.wal); err != nil {
				failed = fmt.Errorf("%w: %w", errSyncFailed, err)
			} else if unlinked(y.wal) || unlinked(y.db) {
				// Synced, but into files no one can open again: a restart
				// would find none of it.
				failed = fmt.Errorf("%w: %s (or its -wal file) has no name any more: restore the directory, "+
					"then restart to open the store again; nothing more is acknowledged", ErrRemoved, y.db.Name())
			}
			if failed != nil {
				y.mu.Lock()
				y.err = failed
				y.mu.Unlock()
			}
		}
		for _, a := range owed {
			if failed != nil {
				a.err = failed
			}
			a.r.done <- a.err
		}
	}
}

// close closes the log file; the goroutine has ended.
func (y *syncer) close() error {
	return errors.Join(y.wal.Close(), y.db.Close())
}
