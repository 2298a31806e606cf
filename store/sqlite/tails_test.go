package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
)

// TestTailsFormTheTransactionsTheFileWould runs random calls against the
// store and, as the reference, the memory store, and requires the same
// transactions from both. The calls move tails through every state: known
// and exact, outgrown (bounds lowered for some seeds), forgotten by a
// rolled-back call, lost by a reopen, and known again once a queue is
// seen empty.
func TestTailsFormTheTransactionsTheFileWould(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			runTailsAgainstMemory(t, seed)
		})
	}
}

func runTailsAgainstMemory(t *testing.T, seed uint64) {
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(seed, 0x7a11))
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	services := []string{"a", "b", "c"}

	var s *Store
	open := func() {
		var err error
		s, err = Open(path)
		require.NoError(t, err)
		if seed%3 == 1 {
			s.w.tails.maxItems, s.w.tails.maxBytes = 7, 2500
		}
		// Recent keys go to the pending table after every call, every
		// few calls, or hardly ever.
		s.w.recent.max = []int{0, 25, recentMax}[seed%3]
	}
	open()
	defer func() { require.NoError(t, s.Close()) }()
	ref := memory.New()

	// Per service, for each store: its epoch, and its stored transactions
	// in the order they were formed.
	got := map[string]*tailSide{}
	want := map[string]*tailSide{}
	claim := func(svc string) {
		e, err := s.Claim(ctx, svc, "test", time.Hour)
		require.NoError(t, err)
		got[svc].epoch = e
	}
	for _, svc := range services {
		got[svc] = &tailSide{}
		claim(svc)
		e, err := ref.Claim(ctx, svc, "test", time.Hour)
		require.NoError(t, err)
		want[svc] = &tailSide{epoch: e}
	}

	for step := range 500 {
		svc := services[rng.IntN(len(services))]
		switch op := rng.IntN(100); {
		case op < 40:
			entries := randomEntries(rng, services, step)
			require.NoError(t, s.Append(ctx, entries), "step %d", step)
			require.NoError(t, ref.Append(ctx, entries))
			for i := range entries {
				// The store keeps copies: the caller may reuse its buffers.
				entries[i].Data[0] = '!'
			}
		case op < 70:
			lim := store.Limits{MaxItems: 1 + rng.IntN(12), MaxBytes: 40 + rng.IntN(1500)}
			if rng.IntN(3) == 0 {
				lim.MaxItemsByKind = map[store.Kind]int{store.KindEphemeral: 1 + rng.IntN(3)}
			}
			g, err := s.NextTxn(ctx, svc, got[svc].epoch, 1, lim)
			require.NoError(t, err, "step %d", step)
			w, err := ref.NextTxn(ctx, svc, want[svc].epoch, 1, lim)
			require.NoError(t, err)
			require.Equal(t, w == nil, g == nil, "step %d: a transaction formed by one store only", step)
			if g == nil {
				continue
			}
			require.Equal(t, itemContents(w.Items), itemContents(g.Items), "step %d: items of the transaction", step)
			got[svc].txns = append(got[svc].txns, g)
			want[svc].txns = append(want[svc].txns, w)
		case op < 88:
			n := len(got[svc].txns)
			if n == 0 {
				continue
			}
			i := rng.IntN(n)
			require.NoError(t, s.Complete(ctx, svc, got[svc].epoch, got[svc].txns[i].ID))
			require.NoError(t, ref.Complete(ctx, svc, want[svc].epoch, want[svc].txns[i].ID))
			got[svc].txns = slices.Delete(got[svc].txns, i, i+1)
			want[svc].txns = slices.Delete(want[svc].txns, i, i+1)
		case op < 91:
			require.NoError(t, s.Purge(ctx, svc, got[svc].epoch))
			require.NoError(t, ref.Purge(ctx, svc, want[svc].epoch))
			got[svc].txns, want[svc].txns = nil, nil
		case op < 96:
			// An Append that fails inside the writer once it has done all
			// its work, tails included, alone or beside another Append in
			// one SQLite transaction: the tails must keep nothing of it.
			undone, err := planAppend(randomEntries(rng, services, step))
			require.NoError(t, err)
			undone.copyItems()
			failed := make(chan error, 1)
			go func() {
				failed <- s.write(ctx, false, func(ctx context.Context, tx *sql.Tx) error {
					if err := s.appendTx(ctx, tx, undone); err != nil {
						return err
					}
					return errors.New("injected failure")
				})
			}()
			entries := randomEntries(rng, services, step)
			require.NoError(t, s.Append(ctx, entries))
			require.NoError(t, ref.Append(ctx, entries))
			require.ErrorContains(t, <-failed, "injected failure")
		default:
			require.NoError(t, s.Close())
			open()
			for _, svc := range services {
				claim(svc)
			}
		}
	}

	// Both stores owe the same, transaction by transaction.
	for _, svc := range services {
		g, err := s.Txns(ctx, svc, 0)
		require.NoError(t, err)
		w, err := ref.Txns(ctx, svc, 0)
		require.NoError(t, err)
		require.Len(t, g, len(w), "stored transactions of %s", svc)
		for i := range w {
			require.Equal(t, itemContents(w[i].Items), itemContents(g[i].Items), "transaction %d of %s", i, svc)
		}
	}
}

// tailSide is what a test knows of one service in one store.
type tailSide struct {
	epoch store.Epoch
	txns  []*store.Txn
}

// randomEntries returns up to 12 entries for random services, with keys
// from a small pool so that duplicates are frequent, some without a key,
// of two kinds and random sizes.
func randomEntries(rng *rand.Rand, services []string, step int) []store.Entry {
	entries := make([]store.Entry, 1+rng.IntN(12))
	for i := range entries {
		e := &entries[i]
		e.Kind = store.KindEvent
		if rng.IntN(4) == 0 {
			e.Kind = store.KindEphemeral
		}
		if rng.IntN(5) != 0 {
			e.Key = fmt.Sprintf("$%d", rng.IntN(60))
		}
		data := make([]byte, 1+rng.IntN(300))
		for j := range data {
			data[j] = byte('a' + rng.IntN(26))
		}
		data[0] = byte('0' + step%10)
		e.Data = data
		for _, svc := range services {
			if rng.IntN(2) == 0 {
				e.Services = append(e.Services, svc)
			}
		}
		if len(e.Services) == 0 {
			e.Services = []string{services[rng.IntN(len(services))]}
		}
	}
	return entries
}

// itemContents describes items without their Seq, which each store
// assigns its own way.
func itemContents(items []store.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = fmt.Sprintf("%d %q %q", it.Kind, it.Key, it.Data)
	}
	return out
}

// TestTailFollowsTheQueue checks when the writer knows a service's queue
// without reading it: from an Append to an empty queue on, until the queue
// outgrows the tail's bounds, and again once NextTxn has bound every
// queued item.
func TestTailFollowsTheQueue(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	s.w.tails.maxItems = 10
	e, err := s.Claim(ctx, "a", "test", time.Hour)
	require.NoError(t, err)
	tailLen := func() int {
		tl, ok := s.w.tails.m["a"]
		if !ok {
			return -1
		}
		return len(tl.items)
	}
	appendN := func(from, n int) {
		entries := make([]store.Entry, n)
		for i := range entries {
			entries[i] = entry(fmt.Sprint("$", from+i), fmt.Sprint("data ", from+i), "a")
		}
		require.NoError(t, s.Append(ctx, entries))
	}
	next := func(max int) []string {
		txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: max, MaxBytes: 1 << 20})
		require.NoError(t, err)
		var keys []string
		for _, it := range txn.Items {
			keys = append(keys, it.Key)
		}
		return keys
	}

	require.Equal(t, -1, tailLen(), "unknown before any call")
	appendN(0, 5)
	require.Equal(t, 5, tailLen(), "an Append to an empty queue starts the tail")
	require.Equal(t, []string{"$0", "$1", "$2"}, next(3))
	require.Equal(t, 2, tailLen(), "NextTxn took the oldest three")
	appendN(5, 9)
	require.Equal(t, -1, tailLen(), "10 items at most: the tail is dropped")
	appendN(14, 1)
	require.Equal(t, -1, tailLen(), "and stays unknown while items are queued")
	require.Equal(t, []string{"$3", "$4", "$5", "$6"}, next(4), "read from the file")
	require.Equal(t, -1, tailLen())
	require.Equal(t, []string{"$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14"}, next(100))
	require.Equal(t, 0, tailLen(), "every queued item is bound: the tail is known again")
	appendN(15, 2)
	require.Equal(t, 2, tailLen())
	require.Equal(t, []string{"$15", "$16"}, next(100))
}

// heapInUse returns the bytes of live heap objects after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestWriterHoldsOnlyWhatItCounts checks that what the writer keeps of an
// Append, in a tail and among the recent keys, holds no other memory of
// the call: not the bytes of the call's other items, and not the string a
// key was cut from (the scheduler's keys are cut from the event's JSON).
func TestWriterHoldsOnlyWhatItCounts(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	before := heapInUse()
	const calls, big = 200, 256 << 10
	for i := range calls {
		event := fmt.Sprintf(`{"event_id":"$%06d"}`, i) + strings.Repeat(" ", big)
		quiet := entry(event[13:20], "q", "quiet")
		busy := entry("", strings.Repeat("b", big), "busy")
		require.NoError(t, s.Append(ctx, []store.Entry{quiet, busy}))
	}
	grown := heapInUse() - before
	require.NotContains(t, s.w.tails.m, "busy", "the busy service outgrew its tail")
	require.Equal(t, calls, len(s.w.tails.m["quiet"].items), "the quiet service's tail holds its items")
	require.Equal(t, calls, s.w.recent.n)
	// Holding the call's buffers would take at least calls × big: 50 MiB.
	require.Less(t, grown, int64(8<<20), "heap grew by %d MiB", grown>>20)
}
