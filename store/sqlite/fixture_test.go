package sqlite

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// testdata/v3-backlog.db is a file that this package wrote at schema
// version 3 (an item row and a queue row per item, and the pending keys in
// a table of their own), holding a backlog as a homeserver upgrading from
// that version would leave it: 600 events for service a, every third of
// them also for b, five keyless to-device items for a, and a's oldest 100
// events formed into a transaction that was never completed. Later
// versions must open it and deliver all of it, in order, once. It was
// written by appending fixtureEntry(i) in calls of 50, then the to-device
// items, then forming a transaction of 100.
const (
	fixturePath   = "testdata/v3-backlog.db"
	fixtureEvents = 600
	fixtureTxn    = 100 // a's events in the stored transaction
	fixtureToDev  = 5
)

// fixtureEntry is event i of the fixture.
func fixtureEntry(i int) store.Entry {
	services := []string{"a"}
	if i%3 == 0 {
		services = append(services, "b")
	}
	return entry(fmt.Sprintf("$%d", i), fmt.Sprintf(`{"n":%d,"body":"%s"}`, i, strings.Repeat("x", 40)), services...)
}

// TestV3BacklogOpensAndDrainsInOrder opens a copy of the version 3 fixture
// and checks that everything in it is delivered, in order, once: a's
// stored transaction with its ID's items and hash, then the rest of its
// queue, and b's queue; that the keys still pending are still
// deduplicated; and that nothing is left once both have drained.
func TestV3BacklogOpensAndDrainsInOrder(t *testing.T) {
	raw, err := os.ReadFile(fixturePath)
	require.NoError(t, err)
	path := dbPath(t)
	require.NoError(t, os.WriteFile(path, raw, 0o600))

	s := openStore(t, path, Options{})
	require.Equal(t, schemaVersion, pragma[int](t, s, "user_version"))
	ctx := t.Context()
	var wantA, wantB []string
	for i := range fixtureEvents {
		wantA = append(wantA, fmt.Sprintf("$%d", i))
		if i%3 == 0 {
			wantB = append(wantB, fmt.Sprintf("$%d", i))
		}
	}
	for range fixtureToDev {
		wantA = append(wantA, "") // keyless
	}
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Len(t, bl, 2)
	require.Equal(t, store.Backlog{Service: "a", Txns: 1, Queued: len(wantA) - fixtureTxn, Oldest: bl[0].Oldest}, bl[0])
	require.Equal(t, store.Backlog{Service: "b", Queued: len(wantB), Oldest: bl[1].Oldest}, bl[1])

	// The fixture's lease has expired: a new owner takes a over.
	ea, err := s.Claim(ctx, "a", "reader", time.Hour)
	require.NoError(t, err)
	eb, err := s.Claim(ctx, "b", "reader", time.Hour)
	require.NoError(t, err)

	// Keys still pending are not queued again; a new one is.
	require.NoError(t, s.Append(ctx, []store.Entry{fixtureEntry(150), fixtureEntry(3), fixtureEntry(590), entry("$new", "new", "a", "b")}))
	wantA = append(wantA, "$new")
	wantB = append(wantB, "$new")

	txns, err := s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	require.Len(t, txns, 1)
	require.Equal(t, store.HashItems(txns[0].Items), txns[0].Hash)
	var gotA []string
	for _, it := range txns[0].Items {
		gotA = append(gotA, it.Key)
	}
	require.NoError(t, s.Complete(ctx, "a", ea, txns[0].ID))
	gotA = append(gotA, drainKeys(t, s, "a", ea, txns[0].ID)...)
	require.Equal(t, wantA, gotA, "a's backlog, in order, once")
	require.Equal(t, wantB, drainKeys(t, s, "b", eb, 0), "b's backlog, in order, once")

	bl, err = s.Backlogs(ctx)
	require.NoError(t, err)
	require.Empty(t, bl)
	require.Zero(t, count(t, s, "batches"), "every item is deleted with its last service")
}

// drainKeys forms and completes transactions of service until none is
// left, checking that their IDs increase past after, and returns the keys
// of their items in order.
func drainKeys(t *testing.T, s *Store, service string, epoch store.Epoch, after int64) []string {
	t.Helper()
	var keys []string
	for {
		txn, err := s.NextTxn(t.Context(), service, epoch, 1, store.Limits{MaxItems: 64, MaxBytes: 1 << 20})
		require.NoError(t, err)
		if txn == nil {
			return keys
		}
		require.Greater(t, txn.ID, after, "transaction IDs increase")
		after = txn.ID
		for _, it := range txn.Items {
			keys = append(keys, it.Key)
		}
		require.NoError(t, s.Complete(t.Context(), service, epoch, txn.ID))
	}
}

// TestVersion4FileCountsReferencesOnceMigrated makes a version 4 file (the
// schema of today without its trigger) holding items shared by two
// services, one of them in a stored transaction, and checks that after the
// migration the shared batch goes with its last service and not before.
func TestVersion4FileCountsReferencesOnceMigrated(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "one", "a", "b"), entry("$2", "two", "a")}))
	ea, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(ctx, "a", ea, 1, lots)
	require.NoError(t, err)
	_, err = s.db.Exec("DROP TRIGGER unref; PRAGMA user_version = 4")
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{})
	require.Equal(t, schemaVersion, pragma[int](t, s, "user_version"))
	ea, err = s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	txns, err := s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	require.Len(t, txns, 1)
	require.Equal(t, txn.ID, txns[0].ID)
	require.NoError(t, s.Complete(ctx, "a", ea, txn.ID))
	require.Equal(t, 2, count(t, s, "items"), "b still has $1, in the same batch")

	eb, err := s.Claim(ctx, "b", "o", time.Hour)
	require.NoError(t, err)
	txn, err = s.NextTxn(ctx, "b", eb, 1, lots)
	require.NoError(t, err)
	require.Len(t, txn.Items, 1)
	require.Equal(t, "$1", txn.Items[0].Key)
	require.NoError(t, s.Complete(ctx, "b", eb, txn.ID))
	require.Equal(t, 0, count(t, s, "items"))
	require.Equal(t, 0, count(t, s, "queue"))
}
