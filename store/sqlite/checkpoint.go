package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/asdeliver/scheduler/internal/lifecycle"
	"github.com/asdeliver/scheduler/store"
)

// checkpointEvery is how many of the writer's commits make the
// checkpointer copy the write-ahead log into the database file.
const checkpointEvery = 64

// checkpointer copies the write-ahead log into the database file on a
// connection of its own: a PASSIVE checkpoint runs while the writer
// writes, so commits do not pay for it (SQLite's automatic checkpoint
// stays as a backstop). It also runs the TRUNCATE checkpoints that shrink
// the file after the writer gave pages back, one at a time. Its connection
// has no busy timeout: a checkpoint never waits for a reader; what it
// cannot copy now, a later one does.
type checkpointer struct {
	db       *sql.DB
	kick     chan struct{}    // capacity 1: the writer has committed enough
	truncate chan chan error  // a TRUNCATE checkpoint wanted, and where to answer
	run      *lifecycle.Group // owns the checkpointer goroutine; Close stops it

	commits int // the writer's commits since the last kick; the writer's
}

func newCheckpointer(db *sql.DB) *checkpointer {
	return &checkpointer{
		db:       db,
		kick:     make(chan struct{}, 1),
		truncate: make(chan chan error),
		run:      lifecycle.New(context.Background()),
	}
}

// committed is called by the writer after each commit.
func (c *checkpointer) committed() {
	c.commits++
	if c.commits < checkpointEvery {
		return
	}
	c.commits = 0
	lifecycle.Poke(c.kick)
}

// truncateLog runs a TRUNCATE checkpoint on the checkpointer's goroutine:
// it copies the whole log into the database file, cuts the file to the
// database's size and empties the log, unless a reader is in the way.
func (c *checkpointer) truncateLog() error {
	answer := make(chan error, 1)
	select {
	case c.truncate <- answer:
		return <-answer
	case <-c.run.Stopping():
		return fmt.Errorf("checkpoint: %w", store.ErrClosed)
	}
}

// loop is the checkpointer goroutine. A PASSIVE checkpoint that fails, or
// stops short at a reader's snapshot, is made up by the next one.
func (c *checkpointer) loop() {
	for {
		select {
		case <-c.kick:
			_ = c.checkpoint("PASSIVE")
		case answer := <-c.truncate:
			answer <- c.checkpoint("TRUNCATE")
		case <-c.run.Stopping():
			return
		}
	}
}

// checkpoint runs PRAGMA wal_checkpoint in mode.
func (c *checkpointer) checkpoint(mode string) error {
	var busy, logFrames, copied int
	return c.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &copied)
}
