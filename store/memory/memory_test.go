package memory_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
	"github.com/asdeliver/scheduler/store/storetest"
)

// newStore returns a fresh memory store that t closes at its end.
func newStore(t *testing.T) store.Store {
	s := memory.New()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: got error %v, want nil", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, newStore)
}

// TestTxnIDsDoNotRepeatAcrossStores stands in for a process restart: a new
// store, created once the clock has moved past the last ID of an earlier
// one, starts above it although it knows nothing of it.
func TestTxnIDsDoNotRepeatAcrossStores(t *testing.T) {
	ctx := t.Context()
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	formAll := func(s store.Store, n int) []int64 {
		t.Helper()
		for i := range n {
			if err := s.Append(ctx, []store.Entry{{
				Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprint(i), Data: []byte("{}")},
				Services: []string{"a"},
			}}); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
		e, err := s.Claim(ctx, "a", "owner", time.Hour)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		var ids []int64
		for range n {
			tx, err := s.NextTxn(ctx, "a", e, 1, lim)
			if err != nil || tx == nil {
				t.Fatalf("NextTxn: got (%v, %v), want a txn and nil", tx, err)
			}
			ids = append(ids, tx.ID)
		}
		return ids
	}

	first := formAll(newStore(t), 50)
	last := first[len(first)-1]
	// A restart takes far longer than the few microseconds this waits.
	for time.Now().UnixMicro() <= last {
		time.Sleep(time.Microsecond)
	}
	second := formAll(newStore(t), 1)
	if second[0] <= last {
		t.Errorf("first txn ID of a new store: got %d, want more than %d, the last ID of the earlier store", second[0], last)
	}
}

// TestLongBacklogDrainsInOrder drains a backlog far longer than one
// transaction while appending more, through the queue's compaction.
func TestLongBacklogDrainsInOrder(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	e, err := s.Claim(ctx, "a", "owner", time.Hour)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	appendN := func(from, n int) {
		var batch []store.Entry
		for i := from; i < from+n; i++ {
			batch = append(batch, store.Entry{
				Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprint(i), Data: []byte(fmt.Sprint(i))},
				Services: []string{"a"},
			})
		}
		if err := s.Append(ctx, batch); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	const total = 10000
	appendN(0, total/2)
	next, appended := 0, total/2
	for {
		tx, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 97, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatalf("NextTxn: %v", err)
		}
		if tx == nil {
			break
		}
		for _, it := range tx.Items {
			if want := fmt.Sprint(next); string(it.Data) != want {
				t.Fatalf("got item %q, want %q", it.Data, want)
			}
			next++
		}
		if err := s.Complete(ctx, "a", e, tx.ID); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		if appended < total {
			appendN(appended, 50)
			appended += 50
		}
	}
	if next != total {
		t.Errorf("drained %d items, want %d", next, total)
	}
}

// TestLeaseExpiresOnTheInjectedClock: NewWithClock's clock, not the wall
// clock, decides when a lease runs out.
func TestLeaseExpiresOnTheInjectedClock(t *testing.T) {
	ctx := t.Context()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := memory.NewWithClock(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	})
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	first, err := s.Claim(ctx, "a", "one", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	advance(time.Minute - time.Nanosecond)
	if _, err := s.Claim(ctx, "a", "two", time.Minute); !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("Claim by another owner before expiry = %v, want ErrLeaseHeld", err)
	}
	advance(time.Nanosecond)
	second, err := s.Claim(ctx, "a", "two", time.Minute)
	if err != nil {
		t.Fatalf("Claim by another owner at expiry = %v, want the lease", err)
	}
	if second <= first {
		t.Fatalf("the new owner's epoch %d is not above %d", second, first)
	}
	if err := s.Append(ctx, []store.Entry{{Item: store.Item{Kind: store.KindEvent, Data: []byte("{}")}, Services: []string{"a"}}}); err != nil {
		t.Fatal(err)
	}
	txn, err := s.NextTxn(ctx, "a", second, 0, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	if err != nil || txn == nil {
		t.Fatalf("NextTxn = %v, %v", txn, err)
	}
	if !txn.Created.Equal(now) {
		t.Fatalf("Txn.Created = %v, want the injected clock's %v", txn.Created, now)
	}
}
