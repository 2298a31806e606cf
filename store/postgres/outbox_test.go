package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/lib/pq"              // database/sql driver "postgres", as Dendrite uses
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// waitFor bounds every wait of these tests for a condition.
const waitFor = 10 * time.Second

// eventually fails t unless cond becomes true within waitFor.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queued returns how many items Backlogs reports queued for service.
func queued(t testing.TB, s store.Store, service string) int {
	t.Helper()
	bl, err := s.Backlogs(t.Context())
	require.NoError(t, err)
	for _, b := range bl {
		if b.Service == service {
			return b.Queued
		}
	}
	return 0
}

// drain forms and completes transactions of service until none is left
// and returns their items.
func drain(t testing.TB, s store.Store, service string, epoch store.Epoch) []store.Item {
	t.Helper()
	var items []store.Item
	for {
		tx, err := s.NextTxn(t.Context(), service, epoch, 1, lots)
		require.NoError(t, err)
		if tx == nil {
			return items
		}
		items = append(items, tx.Items...)
		require.NoError(t, s.Complete(t.Context(), service, epoch, tx.ID))
	}
}

// callerConn returns a connection of the application's own, outside any
// store, closed when t ends.
func callerConn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testDSN(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestAppendTxQueuesOnlyWhenTheTransactionCommits(t *testing.T) {
	s := newStore(t)
	conn := callerConn(t)
	e, err := s.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)

	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(t.Context(), tx, []store.Entry{entry("$1", "one", "a"), entry("$2", "two", "a")}))
	require.NoError(t, tx.Rollback(t.Context()))
	s.forward(t.Context()) // what a notification or the poll would do
	require.Zero(t, count(t, s, "outbox"), "rows left in the outbox by a rolled-back transaction")
	require.Empty(t, drain(t, s, "a", e), "items queued by a rolled-back transaction")

	tx, err = conn.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(t.Context(), tx, []store.Entry{entry("$1", "one", "a"), entry("$2", "two", "a")}))
	require.Zero(t, queued(t, s, "a"), "items queued before the transaction committed")
	require.NoError(t, tx.Commit(t.Context()))
	// The commit's notification makes the store forward the rows.
	eventually(t, "the committed rows are queued", func() bool { return queued(t, s, "a") == 2 })
	require.Equal(t, []string{"$1", "$2"}, keys(drain(t, s, "a", e)))
	s.forward(t.Context())
	require.Empty(t, drain(t, s, "a", e), "items queued twice")
	require.Zero(t, count(t, s, "outbox"))
}

// TestAppendSQLTxQueuesOnlyWhenTheTransactionCommits runs with both
// database/sql drivers a homeserver may use: github.com/lib/pq (Dendrite's)
// and pgx's stdlib.
func TestAppendSQLTxQueuesOnlyWhenTheTransactionCommits(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run("driver="+driver, func(t *testing.T) {
			s := newStore(t)
			db, err := sql.Open(driver, testDSN(t))
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			e, err := s.Claim(t.Context(), "a", "owner", time.Hour)
			require.NoError(t, err)
			entries := []store.Entry{
				entry("$1", "one", "a"),
				{Item: store.Item{Kind: store.KindToDevice, Key: "bin\x00\xff", Data: []byte("\x00\x01 binary")}, Services: []string{"a"}},
			}

			tx, err := db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			require.NoError(t, s.AppendSQLTx(t.Context(), tx, entries))
			require.NoError(t, tx.Rollback())
			s.forward(t.Context())
			require.Empty(t, drain(t, s, "a", e))

			tx, err = db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			require.NoError(t, s.AppendSQLTx(t.Context(), tx, entries))
			require.NoError(t, tx.Commit())
			eventually(t, "the committed rows are queued", func() bool { return queued(t, s, "a") == 2 })
			got := drain(t, s, "a", e)
			require.Len(t, got, 2)
			for i := range got {
				require.Equal(t, entries[i].Kind, got[i].Kind)
				require.Equal(t, entries[i].Key, got[i].Key)
				require.Equal(t, entries[i].Data, got[i].Data)
			}
		})
	}
}

// TestAppendTxDeduplicates: keys pending when the rows are forwarded, and
// keys repeated among the rows, are queued once per service.
func TestAppendTxDeduplicates(t *testing.T) {
	s := newStore(t)
	conn := callerConn(t)
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "appended", "a")}))
	for _, batch := range [][]store.Entry{
		{entry("$1", "again", "a", "b"), entry("$2", "two", "a")},
		{entry("$2", "two again", "a", "b"), entry("$3", "three", "b")},
	} {
		tx, err := conn.Begin(t.Context())
		require.NoError(t, err)
		require.NoError(t, s.AppendTx(t.Context(), tx, batch))
		require.NoError(t, tx.Commit(t.Context()))
	}
	s.forward(t.Context())
	ea, err := s.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)
	eb, err := s.Claim(t.Context(), "b", "owner", time.Hour)
	require.NoError(t, err)
	gotA := drain(t, s, "a", ea)
	require.Equal(t, []string{"$1", "$2"}, keys(gotA))
	require.Equal(t, "appended", string(gotA[0].Data))
	gotB := drain(t, s, "b", eb)
	require.Equal(t, []string{"$1", "$2", "$3"}, keys(gotB))
	require.Equal(t, "two again", string(gotB[1].Data))
}

func TestAppendTxRejectsInvalidEntries(t *testing.T) {
	s := newStore(t)
	conn := callerConn(t)
	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	for _, bad := range []store.Entry{entry("$1", "no services"), entry("$1", "", "a"), entry("$1", "x", "bad\x00id")} {
		err := s.AppendTx(t.Context(), tx, []store.Entry{entry("$ok", "ok", "a"), bad})
		require.ErrorIs(t, err, store.ErrInvalid)
	}
	require.ErrorIs(t, s.AppendTx(t.Context(), nil, []store.Entry{entry("$ok", "ok", "a")}), store.ErrInvalid)
	require.NoError(t, tx.Commit(t.Context()))
	require.Zero(t, count(t, s, "outbox"))
}

// TestAppendTxHeldOpenStallsNothing: while an application's transaction
// that called AppendTx stays open for 5 seconds, another store keeps
// appending without delay and the owner keeps forming transactions; once
// it commits, its rows are delivered, after everything that committed
// before them, none skipped.
func TestAppendTxHeldOpenStallsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a transaction open for 5 seconds")
	}
	schema := newSchema(t)
	owner := openStore(t, schema, Options{})
	producer := openStore(t, schema, Options{})
	conn := callerConn(t)
	e, err := owner.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)

	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	held := []store.Entry{entry("$held-1", "h1", "a"), entry("$held-2", "h2", "a", "b")}
	require.NoError(t, owner.AppendTx(t.Context(), tx, held))

	var (
		mu        sync.Mutex
		delivered []store.Item
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	wg.Go(func() {
		for {
			txn, err := owner.NextTxn(t.Context(), "a", e, 1, store.Limits{MaxItems: 10, MaxBytes: 1 << 20})
			if err != nil {
				t.Errorf("NextTxn: %v", err)
				return
			}
			if txn == nil {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			mu.Lock()
			delivered = append(delivered, txn.Items...)
			mu.Unlock()
			if err := owner.Complete(t.Context(), "a", e, txn.ID); err != nil {
				t.Errorf("Complete: %v", err)
				return
			}
		}
	})

	// 50 batches, 100 ms apart: the transaction stays open 5 seconds.
	var want []string
	var slowest time.Duration
	for i := range 50 {
		batch := []store.Entry{entry(fmt.Sprintf("$p%02d-1", i), "p", "a"), entry(fmt.Sprintf("$p%02d-2", i), "p", "a", "b")}
		start := time.Now()
		require.NoError(t, producer.Append(t.Context(), batch))
		slowest = max(slowest, time.Since(start))
		want = append(want, batch[0].Key, batch[1].Key)
		time.Sleep(100 * time.Millisecond)
	}
	require.Less(t, slowest, time.Second, "an Append waited for the open transaction")
	eventually(t, "everything appended while the transaction is open is delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == len(want)
	})

	require.NoError(t, tx.Commit(t.Context()))
	want = append(want, "$held-1", "$held-2")
	eventually(t, "the held rows are delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) >= len(want)
	})
	close(stop)
	wg.Wait()
	require.Equal(t, want, keys(delivered))
	for i := 1; i < len(delivered); i++ {
		require.Greater(t, delivered[i].Seq, delivered[i-1].Seq)
	}
	require.Equal(t, 51, queued(t, owner, "b"), "items for b: 50 appended and one held")
}

// TestAppendTxForwardsWithOneConnection: the forwarder creates the rows
// of a service it has not seen on its own connection, so a store with a
// pool of one still forwards.
func TestAppendTxForwardsWithOneConnection(t *testing.T) {
	s := openStore(t, newSchema(t), Options{MaxConns: 1})
	conn := callerConn(t)
	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(t.Context(), tx, []store.Entry{entry("$1", "one", "new")}))
	require.NoError(t, tx.Commit(t.Context()))
	eventually(t, "the row is forwarded", func() bool { return queued(t, s, "new") == 1 })
}

// TestAppendComesAfterCommittedOutboxRows: rows of an AppendTx whose
// transaction committed before an Append was called are queued before
// that Append's entries, even when no forwarder has moved them yet (this
// store only polls, once an hour).
func TestAppendComesAfterCommittedOutboxRows(t *testing.T) {
	s := openStore(t, newSchema(t), Options{PollOnly: true, PollInterval: time.Hour})
	conn := callerConn(t)
	e, err := s.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)

	require.NoError(t, pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		return s.AppendTx(t.Context(), tx, []store.Entry{entry("$1", "one", "a"), entry("$2", "two", "a")})
	}))
	// An open transaction's rows are not waited for: they commit after
	// the Append and come after it.
	open, err := conn.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, s.AppendTx(t.Context(), open, []store.Entry{entry("$4", "four", "a")}))

	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$3", "three", "a")}))
	require.NoError(t, open.Commit(t.Context()))
	s.forward(t.Context())
	require.Equal(t, []string{"$1", "$2", "$3", "$4"}, keys(drain(t, s, "a", e)))
	require.Zero(t, count(t, s, "outbox"))
}
