package postgres

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// TestSharedItemsDeletedWhenLastServiceCompletesConcurrently: three
// stores, as three processes, each own one of three services that want
// the same items, and complete their transactions at the same moment,
// round after round. Each round, every service still has all its items
// until it completes them itself (no premature delete), and once all
// have completed no item row is left (no orphan).
func TestSharedItemsDeletedWhenLastServiceCompletesConcurrently(t *testing.T) {
	schema := newSchema(t)
	services := []string{"a", "b", "c"}
	stores := make([]*Store, len(services))
	epochs := make([]store.Epoch, len(services))
	for i, svc := range services {
		stores[i] = openStore(t, schema, Options{MaxConns: 2})
		e, err := stores[i].Claim(t.Context(), svc, "owner", time.Hour)
		require.NoError(t, err)
		epochs[i] = e
	}
	const rounds, perRound = 30, 20
	for r := range rounds {
		var entries []store.Entry
		for i := range perRound {
			// Most items for all three, some for two, a few for one.
			svcs := services[:1+(i%3+r)%3]
			entries = append(entries, entry(fmt.Sprintf("$%d-%d", r, i), fmt.Sprintf(`{"r":%d,"i":%d}`, r, i), svcs...))
		}
		require.NoError(t, stores[r%3].Append(t.Context(), entries))
		txns := make([]*store.Txn, len(services))
		for i, svc := range services {
			tx, err := stores[i].NextTxn(t.Context(), svc, epochs[i], 1, lots)
			require.NoError(t, err)
			txns[i] = tx
		}

		// Even rounds: all three complete at the same moment. Odd rounds:
		// one lags; the others complete at the same moment, and it still
		// finds all of its items, then completes.
		lag := -1
		if r%2 == 1 {
			lag = r % 3
		}
		completeAll := func(which func(i int) bool) {
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, svc := range services {
				if txns[i] == nil || !which(i) {
					continue
				}
				wg.Go(func() {
					<-start
					if err := stores[i].Complete(t.Context(), svc, epochs[i], txns[i].ID); err != nil {
						t.Errorf("round %d: Complete(%s): %v", r, svc, err)
					}
				})
			}
			close(start)
			wg.Wait()
		}
		completeAll(func(i int) bool { return i != lag })
		if lag >= 0 && txns[lag] != nil {
			listed, err := stores[lag].Txns(t.Context(), services[lag], 0)
			require.NoError(t, err)
			require.Len(t, listed, 1)
			require.Equal(t, keys(txns[lag].Items), keys(listed[0].Items),
				"round %d: %s's stored txn lost items that other services completed", r, services[lag])
			completeAll(func(i int) bool { return i == lag })
		}
		require.False(t, t.Failed())
		require.Zero(t, count(t, stores[0], "items"), "round %d: item rows left after every service completed", r)
		require.Zero(t, count(t, stores[0], "queue"), "round %d: queue rows left after every service completed", r)
	}
}

// TestPurgeAndCompleteOfSharedItemsConcurrently: one service purges while
// another completes the same shared items; neither leaves an orphan.
func TestPurgeAndCompleteOfSharedItemsConcurrently(t *testing.T) {
	schema := newSchema(t)
	s1 := openStore(t, schema, Options{MaxConns: 2})
	s2 := openStore(t, schema, Options{MaxConns: 2})
	ea, err := s1.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)
	eb, err := s2.Claim(t.Context(), "b", "owner", time.Hour)
	require.NoError(t, err)
	for r := range 30 {
		var entries []store.Entry
		for i := range 20 {
			entries = append(entries, entry(fmt.Sprintf("$%d-%d", r, i), "shared", "a", "b"))
		}
		require.NoError(t, s1.Append(t.Context(), entries))
		tx, err := s1.NextTxn(t.Context(), "a", ea, 1, store.Limits{MaxItems: 10 + r%10, MaxBytes: 1 << 20})
		require.NoError(t, err)
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			if err := s1.Complete(t.Context(), "a", ea, tx.ID); err != nil {
				t.Errorf("Complete: %v", err)
			}
			if err := s1.Purge(t.Context(), "a", ea); err != nil {
				t.Errorf("Purge(a): %v", err)
			}
		})
		wg.Go(func() {
			<-start
			if err := s2.Purge(t.Context(), "b", eb); err != nil {
				t.Errorf("Purge(b): %v", err)
			}
		})
		close(start)
		wg.Wait()
		require.False(t, t.Failed())
		require.Zero(t, count(t, s1, "items"), "round %d: item rows left", r)
		require.Zero(t, count(t, s1, "queue"), "round %d: queue rows left", r)
	}
}
