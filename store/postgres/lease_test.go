package postgres

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// TestStaleOwnerIsFencedMidTransaction: an owner whose lease has expired
// keeps forming transactions, each of which takes long to commit; another
// store claims the service meanwhile. The new owner's Claim waits for the
// old owner's NextTxn in flight, so what it lists right after claiming is
// all the old owner ever formed: every later NextTxn of the old owner
// fails with ErrStaleEpoch and forms nothing.
func TestStaleOwnerIsFencedMidTransaction(t *testing.T) {
	schema := newSchema(t)
	old := openStore(t, schema, Options{MaxConns: 2})
	next := openStore(t, schema, Options{MaxConns: 2})
	sleepInCommit(t, schema, "test_slow_txn", "INSERT", "txns", "", 100*time.Millisecond)

	for round := range 4 {
		svc := fmt.Sprintf("svc%d", round)
		var entries []store.Entry
		for i := range 100 {
			entries = append(entries, entry(fmt.Sprintf("$%d", i), "x", svc))
		}
		require.NoError(t, old.Append(t.Context(), entries))
		e1, err := old.Claim(t.Context(), svc, "old", 150*time.Millisecond)
		require.NoError(t, err)

		type result struct {
			formed int
			err    error
		}
		res := make(chan result, 1)
		go func() {
			formed := 0
			for {
				tx, err := old.NextTxn(t.Context(), svc, e1, 1, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
				if err != nil || tx == nil {
					res <- result{formed, err}
					return
				}
				formed++
			}
		}()

		var e2 store.Epoch
		deadline := time.Now().Add(10 * time.Second)
		for {
			e2, err = next.Claim(t.Context(), svc, "next", time.Hour)
			if err == nil {
				break
			}
			require.ErrorIs(t, err, store.ErrLeaseHeld)
			require.True(t, time.Now().Before(deadline), "the old owner's lease never expired")
			time.Sleep(10 * time.Millisecond)
		}
		require.Greater(t, e2, e1)
		seen, err := next.Txns(t.Context(), svc, 0)
		require.NoError(t, err)

		r := <-res
		require.ErrorIs(t, r.err, store.ErrStaleEpoch, "the old owner's NextTxn after the claim")
		require.Positive(t, r.formed, "the old owner formed nothing before its lease expired: the test proved nothing")
		after, err := next.Txns(t.Context(), svc, 0)
		require.NoError(t, err)
		require.Equal(t, len(seen), len(after),
			"round %d: the old owner formed a transaction after the new owner had claimed and listed", round)
		require.Equal(t, r.formed, len(after))

		// Its other writes fail too, and change nothing.
		require.ErrorIs(t, old.Complete(t.Context(), svc, e1, after[0].ID), store.ErrStaleEpoch)
		require.ErrorIs(t, old.Purge(t.Context(), svc, e1), store.ErrStaleEpoch)
		err = old.Release(t.Context(), svc, e1)
		require.True(t, errors.Is(err, store.ErrStaleEpoch), "Release: %v", err)
		again, err := next.Txns(t.Context(), svc, 0)
		require.NoError(t, err)
		require.Len(t, again, len(after))
	}
}

// TestEpochsComeFromTheDatabase: a store opened afterwards on the same
// schema, as a new process would, never hands out an epoch granted before.
func TestEpochsComeFromTheDatabase(t *testing.T) {
	schema := newSchema(t)
	s1 := openStore(t, schema, Options{})
	var last store.Epoch
	for range 5 {
		e, err := s1.Claim(t.Context(), "a", "one", time.Hour)
		require.NoError(t, err)
		require.Greater(t, e, last)
		last = e
		require.NoError(t, s1.Release(t.Context(), "a", e))
	}
	require.NoError(t, s1.Close())
	s2 := openStore(t, schema, Options{})
	e, err := s2.Claim(t.Context(), "a", "two", time.Hour)
	require.NoError(t, err)
	require.Greater(t, e, last)
}

// slowCompletes makes every Complete on schema take 300 ms to commit.
func slowCompletes(t *testing.T, schema string) {
	sleepInCommit(t, schema, "test_slow_complete", "DELETE", "txns", "", 300*time.Millisecond)
}

// TestCompleteRunsBesideTheNextFormation: the owner's NextTxn does not
// wait for its Complete under way (their lease-row locks do not
// conflict), so the next transaction is formed while the last one is
// completed.
func TestCompleteRunsBesideTheNextFormation(t *testing.T) {
	schema := newSchema(t)
	s := openStore(t, schema, Options{})
	slowCompletes(t, schema)
	var entries []store.Entry
	for i := range 2 {
		entries = append(entries, entry(fmt.Sprintf("$%d", i), "x", "svc"))
	}
	require.NoError(t, s.Append(t.Context(), entries))
	epoch, err := s.Claim(t.Context(), "svc", "owner", time.Hour)
	require.NoError(t, err)
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	first, err := s.NextTxn(t.Context(), "svc", epoch, 1, lim)
	require.NoError(t, err)

	completed := make(chan error, 1)
	go func() { completed <- s.Complete(t.Context(), "svc", epoch, first.ID) }()
	waitForSlowCommit(t, s) // the Complete has deleted and sleeps in its commit
	second, err := s.NextTxn(t.Context(), "svc", epoch, 1, lim)
	require.NoError(t, err)
	require.NotNil(t, second)
	select {
	case err := <-completed:
		t.Fatalf("the Complete (%v) finished before the NextTxn started beside it: NextTxn waited for it", err)
	default:
	}
	require.NoError(t, <-completed)
}

// TestClaimWaitsForACompleteUnderWay: a Claim by another owner waits for
// the Complete that the old owner has under way, and the old owner's
// calls after it fail with ErrStaleEpoch.
func TestClaimWaitsForACompleteUnderWay(t *testing.T) {
	schema := newSchema(t)
	old := openStore(t, schema, Options{})
	next := openStore(t, schema, Options{})
	slowCompletes(t, schema)
	require.NoError(t, old.Append(t.Context(), []store.Entry{entry("$1", "x", "svc"), entry("$2", "y", "svc")}))
	e1, err := old.Claim(t.Context(), "svc", "old", time.Millisecond)
	require.NoError(t, err)
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	first, err := old.NextTxn(t.Context(), "svc", e1, 1, lim)
	require.NoError(t, err)
	second, err := old.NextTxn(t.Context(), "svc", e1, 1, lim)
	require.NoError(t, err)

	completed := make(chan error, 1)
	go func() { completed <- old.Complete(t.Context(), "svc", e1, first.ID) }()
	waitForSlowCommit(t, next)
	e2, err := next.Claim(t.Context(), "svc", "next", time.Hour) // the old lease has expired
	require.NoError(t, err)
	require.Greater(t, e2, e1)
	select {
	case err := <-completed:
		require.NoError(t, err, "the Complete that the claim waited for")
	default:
		t.Fatal("the Claim returned while the old owner's Complete was still under way")
	}
	txns, err := next.Txns(t.Context(), "svc", 0)
	require.NoError(t, err)
	require.Len(t, txns, 1, "the new owner sees the completed transaction gone")
	require.Equal(t, second.ID, txns[0].ID)
	require.ErrorIs(t, old.Complete(t.Context(), "svc", e1, second.ID), store.ErrStaleEpoch)
}

// waitForSlowCommit waits, asking through s, until a session sleeps in
// a commit of slowCompletes on s's schema.
func waitForSlowCommit(t *testing.T, s *Store) {
	t.Helper()
	eventually(t, "a slow Complete began", func() bool {
		var n int
		err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
WHERE wait_event = 'PgSleep' AND datname = current_database() AND position($1 in query) > 0`, s.schema).Scan(&n)
		require.NoError(t, err)
		return n > 0
	})
}
