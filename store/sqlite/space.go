package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// Free pages are given back to the file system once vacuumThreshold bytes
// of them have gathered, at most vacuumStep bytes per step of the writer:
// fewer are left for SQLite to reuse, so a backlog that comes and goes by
// small amounts does not shrink and regrow the file. A step is larger than
// what one Complete frees (about 1 MiB at most by default), so free pages
// never pile up while a backlog drains, yet costs a few milliseconds.
const (
	vacuumThreshold = 1 << 20
	vacuumStep      = 4 << 20
)

// vacuumThresholdPages and vacuumStepPages are vacuumThreshold and
// vacuumStep in pages.
func (s *Store) vacuumThresholdPages() int64 { return max(vacuumThreshold/s.pageSize, 1) }
func (s *Store) vacuumStepPages() int64      { return max(vacuumStep/s.pageSize, 1) }

// compactStep is one bounded step of the writer's compaction: it gives
// back up to vacuumStep of free pages when vacuumThreshold are free, or
// else, after pages were given back, checkpoints if the files on disk have
// outgrown the database. A failure only postpones the space.
func (s *Store) compactStep() {
	ctx := context.Background()
	if s.w.free >= s.vacuumThresholdPages() {
		n, free, err := s.vacuumStep(ctx, s.vacuumStepPages())
		if err != nil || n == 0 {
			// Nothing given back: stop trying until a call frees more.
			s.w.free = 0
			return
		}
		s.w.free = free
		s.w.checkpointOwed = true
		return
	}
	s.w.checkpointOwed = false
	_ = s.checkpointIfShrunk(ctx)
}

// vacuumStep gives back up to step free pages in a SQLite transaction of
// its own, and returns how many it gave back and how many are still free.
func (s *Store) vacuumStep(ctx context.Context, step int64) (n int, free int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = tx.Rollback() }()
	// The pragma frees a page per row it steps: read them all.
	rows, err := tx.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", step))
	if err == nil {
		err = scanRows(rows, func() error { n++; return nil })
	}
	if err != nil {
		return 0, 0, err
	}
	if err := tx.StmtContext(ctx, s.st.freelistCount).QueryRowContext(ctx).Scan(&free); err != nil {
		return 0, 0, err
	}
	return n, free, tx.Commit()
}

// compact gives back every free page in steps, each its own SQLite
// transaction, then checkpoints if the file on disk is now too large.
// Open calls it before the writer starts.
func (s *Store) compact(ctx context.Context) error {
	for {
		n, free, err := s.vacuumStep(ctx, s.vacuumStepPages())
		if err != nil {
			return err
		}
		if n == 0 || free == 0 {
			return s.checkpointIfShrunk(ctx)
		}
	}
}

// checkpointIfShrunk checkpoints when the database file and its log on
// disk together exceed the database by vacuumThreshold: in WAL mode, the
// pages given back leave the file only when a checkpoint copies the log
// into it, and the log keeps its size until it is truncated.
func (s *Store) checkpointIfShrunk(ctx context.Context) error {
	var onDisk int64
	for _, name := range []string{s.path, s.path + "-wal"} {
		fi, err := os.Stat(name)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err == nil {
			onDisk += fi.Size()
		}
	}
	var pages int64
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return err
	}
	if onDisk/s.pageSize-pages < s.vacuumThresholdPages() {
		return nil
	}
	return s.ckpt.truncateLog()
}

// checkRoom fails with ErrFull, before anything is written, when an
// Append of a batch of size bytes queued for services would take the
// pages in use past what Options.MaxSize leaves for appends. It counts
// the pages the rows may take at most: the batch's bytes in overflow
// pages, and a page per row for the rows and the index entries.
func (s *Store) checkRoom(ctx context.Context, tx *sql.Tx, size, services int) error {
	if s.appendMaxPages == 0 {
		return nil
	}
	var inUse int64
	if err := tx.StmtContext(ctx, s.st.pagesInUse).QueryRowContext(ctx).Scan(&inUse); err != nil {
		return fmt.Errorf("reading the database size: %w", err)
	}
	need := int64(size)/(s.pageSize-4) + 2 + int64(services)
	if inUse+need > s.appendMaxPages {
		return refuse(fmt.Errorf("%w: storing the call would take %d pages of %d bytes in use to %d, and Options.MaxSize leaves %d for queued items",
			ErrFull, inUse, s.pageSize, inUse+need, s.appendMaxPages))
	}
	return nil
}

// fullErr makes an error SQLite reported as SQLITE_FULL (the database
// reached max_page_count, or the disk is full) match ErrFull.
func fullErr(err error) error {
	if isFull(err) && !errors.Is(err, ErrFull) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}
