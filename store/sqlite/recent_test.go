package sqlite

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// queuedFor returns the keys queued or bound for service, in seq order.
func queuedFor(t *testing.T, s *Store, service string) []string {
	t.Helper()
	rows, err := s.db.Query(`SELECT i.key FROM queue AS q JOIN items AS i ON i.seq = q.seq
		WHERE q.service = ? ORDER BY q.seq`, service)
	require.NoError(t, err)
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	return keys
}

func keyedEntries(service string, keys ...string) []store.Entry {
	entries := make([]store.Entry, len(keys))
	for i, k := range keys {
		entries[i] = entry(k, "data of "+k, service)
	}
	return entries
}

func TestRecentKeysReachThePendingTableInOneBatch(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	s.w.recent.max = 10
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1", "$2", "$3", "$4", "$5")))
	require.Zero(t, count(t, s, "pending"), "5 recent keys stay in memory")
	require.Equal(t, 5, s.w.recent.n)

	require.NoError(t, s.Append(ctx, keyedEntries("a", "$6", "$7", "$8", "$9", "$10", "$11")))
	require.Equal(t, 11, count(t, s, "pending"), "11 would be too many: all of them go to the table")
	require.Zero(t, s.w.recent.n)

	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1", "$11", "$12")))
	require.Equal(t, []string{"$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12"},
		queuedFor(t, s, "a"), "keys in the table are still pending keys")
}

func TestRecentKeysSurviveReopen(t *testing.T) {
	ctx := t.Context()
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	s.w.recent.max = 4
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1", "$2", "$3"))) // recent
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$4", "$5")))       // all to the table
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$6", "$7")))       // recent
	require.Equal(t, 5, count(t, s, "pending"))
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{})
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$7", "$5", "$1", "$8")))
	require.Equal(t, []string{"$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"}, queuedFor(t, s, "a"),
		"the keys of both kinds were read back")
	require.Equal(t, 3, s.w.recent.n, "$6, $7 and $8 are recent")
}

// TestRecentKeysAreReadBackAfterAFailedCommit checks the case where the
// writer's memory had followed a call that SQLite then undid: a Complete
// whose commit fails must not leave its keys forgotten.
func TestRecentKeysAreReadBackAfterAFailedCommit(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1", "$2")))
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)

	var fail atomic.Bool
	failCommits(t, s, &fail)
	fail.Store(true)
	require.ErrorContains(t, s.Complete(ctx, "a", e, txn.ID), "committing")
	fail.Store(false)

	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1", "$3")))
	require.Equal(t, []string{"$1", "$2", "$3"}, queuedFor(t, s, "a"), "$1 is still pending: not queued twice")

	require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
	require.NoError(t, s.Append(ctx, keyedEntries("a", "$1")))
	require.Equal(t, []string{"$3", "$1"}, queuedFor(t, s, "a"), "delivered, $1 may come again")
}

func TestRecentKeysAreBounded(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	n := 0
	for ; n < recentMax+1000; n += 1000 {
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprint("$", n+i)
		}
		require.NoError(t, s.Append(ctx, keyedEntries("a", keys...)))
		require.LessOrEqual(t, s.w.recent.n, recentMax)
	}
	require.Equal(t, n, count(t, s, "pending")+s.w.recent.n, "every key is in the table or recent")
}
