package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// Free pages are given back to the file system once vacuumThreshold bytes
// of them have gathered, at most vacuumStep bytes per call. Fewer free
// pages are left for SQLite to reuse: a store whose backlog comes and goes
// by small amounts does not shrink and regrow its file at every step. The
// step is larger than what one Complete frees (a transaction holds at most
// about 1 MiB of items by default), so the free pages never pile up while a
// backlog drains, yet one step costs a few milliseconds at most.
const (
	vacuumThreshold = 1 << 20
	vacuumStep      = 4 << 20
)

// rowCounter is what runs a query: *sql.DB, *sql.Tx and *sql.Conn.
type rowCounter interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// countRows runs query and reads it to the end, returning the number of
// rows. PRAGMA incremental_vacuum frees one page per row as it is stepped,
// so it must be read to the end to do its work.
func countRows(ctx context.Context, q rowCounter, query string) (int, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		_ = rows.Close()
		return n, err
	}
	return n, rows.Close()
}

// vacuumPages returns vacuumThreshold and vacuumStep in pages.
func (s *Store) vacuumPages() (threshold, step int64) {
	return max(vacuumThreshold/s.pageSize, 1), max(vacuumStep/s.pageSize, 1)
}

// vacuumStepTx gives back up to vacuumStep of free pages within tx when at
// least vacuumThreshold of them are free, and returns how many pages it
// gave back. The step runs under a savepoint: if it fails, it is undone and
// the rest of tx stands, since the space is only postponed to the next call.
func (s *Store) vacuumStepTx(ctx context.Context, tx *sql.Tx) (int, error) {
	threshold, step := s.vacuumPages()
	var free int64
	if err := tx.StmtContext(ctx, s.st.freelistCount).QueryRowContext(ctx).Scan(&free); err != nil {
		return 0, fmt.Errorf("reading the free page count: %w", err)
	}
	if free < threshold {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT vacuum"); err != nil {
		return 0, err
	}
	n, err := countRows(ctx, tx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", step))
	if err != nil {
		if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO vacuum"); rerr != nil {
			return 0, fmt.Errorf("incremental vacuum: %w (undoing it: %w)", err, rerr)
		}
		n = 0
	}
	if _, err := tx.ExecContext(ctx, "RELEASE vacuum"); err != nil {
		return 0, err
	}
	return n, nil
}

// compact gives back free pages in steps, each its own SQLite transaction
// so that other calls run in between, until fewer than minFree are free;
// then it checkpoints if the file on disk is now too large. Open calls it
// with 1 (give back everything), Purge with the vacuum threshold.
func (s *Store) compact(ctx context.Context, minFree int64) error {
	_, step := s.vacuumPages()
	total := 0
	for {
		var free int64
		if err := s.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
			return err
		}
		if free < minFree {
			break
		}
		n, err := countRows(ctx, s.db, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", step))
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		total += n
	}
	if total > 0 {
		return s.checkpointIfShrunk(ctx)
	}
	return nil
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
	threshold, _ := s.vacuumPages()
	if onDisk/s.pageSize-pages < threshold {
		return nil
	}
	return s.checkpoint(ctx)
}

// checkpoint copies the write-ahead log into the database file, cuts the
// file to the database's size and empties the log (TRUNCATE). It does not
// wait for another program's reader: with one in the way it checkpoints
// what it can and leaves the rest to a later checkpoint.
func (s *Store) checkpoint(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = 0"); err != nil {
		return err
	}
	var busy, logFrames, copied int
	cerr := conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &copied)
	restore := fmt.Sprintf("PRAGMA busy_timeout = %d", s.busyTimeout.Milliseconds())
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), restore); err != nil {
		// A connection without its busy timeout would fail where it must
		// wait: have database/sql drop it and open one, which the
		// connector configures in full.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return errors.Join(cerr, err)
	}
	return cerr
}

// checkRoom fails with ErrFull when the pages in use inside tx exceed what
// Options.MaxSize leaves for appends.
func (s *Store) checkRoom(ctx context.Context, tx *sql.Tx) error {
	if s.appendMaxPages == 0 {
		return nil
	}
	var inUse int64
	if err := tx.StmtContext(ctx, s.st.pagesInUse).QueryRowContext(ctx).Scan(&inUse); err != nil {
		return fmt.Errorf("reading the database size: %w", err)
	}
	if inUse > s.appendMaxPages {
		return fmt.Errorf("%w: storing the call would fill %d pages of %d bytes, and Options.MaxSize leaves %d for queued items",
			ErrFull, inUse, s.pageSize, s.appendMaxPages)
	}
	return nil
}

// fullErr makes an error SQLite reported as SQLITE_FULL (the database
// reached max_page_count, or the disk is full) match ErrFull.
func fullErr(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrFull && !errors.Is(err, ErrFull) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}
