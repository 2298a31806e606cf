package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// gateSyncs makes the store's syncer wait, before each sync of the log,
// until the returned channel receives; it counts the syncs begun. When t
// ends, the gate opens for good, so that a failed test does not leave
// Close waiting for a sync.
func gateSyncs(t *testing.T, s *Store) (gate chan struct{}, begun *atomic.Int64) {
	gate, begun = make(chan struct{}), new(atomic.Int64)
	t.Cleanup(func() { close(gate) })
	s.sync.datasync = func(f *os.File) error {
		begun.Add(1)
		<-gate
		return datasync(f)
	}
	return gate, begun
}

func TestCallReturnsOnlyOnceItsCommitIsSynced(t *testing.T) {
	s := newStore(t)
	gate, begun := gateSyncs(t, s)
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- s.Append(ctx, []store.Entry{entry("$a", "a", "svc")}) }()
	require.Eventually(t, func() bool { return begun.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, count(t, s, "items"), "the commit is written before the sync")

	// While the first sync waits, the writer goes on: a second call
	// commits too, and waits for a sync of its own.
	second := make(chan error, 1)
	go func() { second <- s.Append(ctx, []store.Entry{entry("$b", "b", "svc")}) }()
	require.Eventually(t, func() bool { return commits(s) == 2 }, 10*time.Second, time.Millisecond)
	select {
	case err := <-first:
		t.Fatalf("first call returned (%v) before its commit was synced", err)
	case err := <-second:
		t.Fatalf("second call returned (%v) before its commit was synced", err)
	case <-time.After(50 * time.Millisecond):
	}

	gate <- struct{}{}
	require.NoError(t, <-first)
	// The second commit was written before the next sync began, so that
	// sync covers it.
	gate <- struct{}{}
	require.NoError(t, <-second)
}

func TestFailedSyncFailsItsCallsAndEveryLaterCall(t *testing.T) {
	s := newStore(t)
	ioErr := errors.New("input/output error")
	s.sync.datasync = func(*os.File) error { return ioErr }
	ctx := context.Background()

	err := s.Append(ctx, []store.Entry{entry("$a", "a", "svc")})
	require.ErrorIs(t, err, errSyncFailed)
	require.ErrorIs(t, err, ioErr)

	// After a failed sync nothing is acknowledged any more, not even once
	// syncs succeed again: the pages it failed to write may be gone.
	s.sync.datasync = datasync
	_, err = s.Claim(ctx, "svc", "me", time.Minute)
	require.ErrorIs(t, err, errSyncFailed)
	require.ErrorIs(t, s.Append(ctx, []store.Entry{entry("$b", "b", "svc")}), errSyncFailed)

	// Nor is anything read: commits are readable before their sync, and
	// one that never reached the disk must not be sent.
	_, err = s.Backlogs(ctx)
	require.ErrorIs(t, err, errSyncFailed)
	_, err = s.Txns(ctx, "svc", 0)
	require.ErrorIs(t, err, errSyncFailed)

	// A reopened store works again.
	path := s.path
	require.NoError(t, s.Close())
	s = openStore(t, path, Options{})
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$b", "b", "svc")}))
}

func TestCallsQueuedWhenASyncFailsDoNotRun(t *testing.T) {
	s := newStore(t)
	gate, begun := gateSyncs(t, s)
	ioErr := errors.New("input/output error")
	s.sync.datasync = func(*os.File) error {
		begun.Add(1)
		<-gate
		return ioErr
	}
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- s.Append(ctx, []store.Entry{entry("$a", "a", "svc")}) }()
	require.Eventually(t, func() bool { return begun.Load() == 1 }, 10*time.Second, time.Millisecond)

	// Queued behind a writer that is busy, a call waits while the sync
	// that is about to fail runs.
	release := blockWriter(t, s)
	second := make(chan error, 1)
	go func() { second <- s.Append(ctx, []store.Entry{entry("$b", "b", "svc")}) }()
	waitQueued(t, s, 1)
	gate <- struct{}{}
	require.ErrorIs(t, <-first, errSyncFailed)
	before := commits(s)
	release()
	require.ErrorIs(t, <-second, errSyncFailed)
	require.Equal(t, before, commits(s), "nothing runs once a sync has failed")
}

func TestRemovedDirectoryFailsEveryLaterCall(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "asdeliver.db"), Options{})
	ctx := context.Background()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$a", "a", "svc")}))

	require.NoError(t, os.RemoveAll(dir))
	// The commit goes into files that a restart cannot find: it is not
	// acknowledged, and neither is anything after it.
	err := s.Append(ctx, []store.Entry{entry("$b", "b", "svc")})
	require.ErrorIs(t, err, ErrRemoved)
	require.ErrorContains(t, err, dir)
	require.ErrorIs(t, s.Append(ctx, []store.Entry{entry("$c", "c", "svc")}), ErrRemoved)
	_, err = s.Backlogs(ctx)
	require.ErrorIs(t, err, ErrRemoved)
}
