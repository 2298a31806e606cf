package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// produced is the Data of an item of testConcurrentDelivery.
type produced struct {
	G int `json:"g"` // producing goroutine
	I int `json:"i"` // position in that goroutine's sequence
}

// testConcurrentDelivery: with several goroutines appending while one
// consumer per service forms and completes transactions, and another reads
// Backlogs and Txns, every item reaches each of its services exactly once,
// in each producer's order, with Seq increasing.
func testConcurrentDelivery(t *testing.T, s store.Store) {
	const producers, perProducer = 4, 150
	services := []string{"a", "b"}
	// wants says which services an item is for: every third item of a
	// producer goes to a alone, the others to both.
	wants := func(i int) []string {
		if i%3 == 0 {
			return services[:1]
		}
		return services
	}
	ctx := t.Context()

	var producing sync.WaitGroup
	for g := range producers {
		producing.Go(func() {
			for i := 0; i < perProducer; {
				var batch []store.Entry
				for n := 1 + (g+i)%4; n > 0 && i < perProducer; n-- {
					data, _ := json.Marshal(produced{G: g, I: i})
					batch = append(batch, entry(fmt.Sprintf("$g%d-%d", g, i), string(data), wants(i)...))
					i++
				}
				if err := s.Append(ctx, batch); err != nil {
					t.Errorf("producer %d: Append: got error %v, want nil", g, err)
					return
				}
			}
		})
	}
	var done atomic.Bool
	go func() {
		producing.Wait()
		done.Store(true)
	}()

	var consuming sync.WaitGroup
	got := make([][]store.Item, len(services))
	for k, svc := range services {
		e := mustClaim(t, s, svc, "consumer")
		consuming.Go(func() {
			lim := store.Limits{MaxItems: 7, MaxBytes: 1 << 20}
			deadline := time.Now().Add(4 * waitFor)
			for {
				finished := done.Load() // read before NextTxn: nothing is appended after it
				tx, err := s.NextTxn(ctx, svc, e, format, lim)
				if err != nil {
					t.Errorf("consumer of %s: NextTxn: got error %v, want nil", svc, err)
					return
				}
				if tx == nil {
					if finished {
						return
					}
					if time.Now().After(deadline) {
						t.Errorf("consumer of %s: producers still running after %v", svc, 4*waitFor)
						return
					}
					time.Sleep(100 * time.Microsecond)
					continue
				}
				got[k] = append(got[k], tx.Items...)
				if err := s.Complete(ctx, svc, e, tx.ID); err != nil {
					t.Errorf("consumer of %s: Complete(%d): got error %v, want nil", svc, tx.ID, err)
					return
				}
			}
		})
	}
	consuming.Go(func() {
		for !done.Load() {
			if _, err := s.Backlogs(ctx); err != nil {
				t.Errorf("reader: Backlogs: got error %v, want nil", err)
				return
			}
			for _, svc := range services {
				if _, err := s.Txns(ctx, svc, 0); err != nil {
					t.Errorf("reader: Txns(%q): got error %v, want nil", svc, err)
					return
				}
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
	consuming.Wait()
	if t.Failed() {
		return
	}

	for k, svc := range services {
		checkSeq(t, "items delivered to "+svc, got[k])
		next := make([]int, producers) // next expected position per producer
		for _, it := range got[k] {
			var p produced
			if err := json.Unmarshal(it.Data, &p); err != nil || p.G < 0 || p.G >= producers {
				t.Fatalf("service %s: got item with Data %q, want one that a producer appended", svc, it.Data)
			}
			for next[p.G] < perProducer && !slices.Contains(wants(next[p.G]), svc) {
				next[p.G]++
			}
			if p.I != next[p.G] || it.Key != fmt.Sprintf("$g%d-%d", p.G, p.I) {
				t.Fatalf("service %s: got producer %d's item %d (key %q), want its item %d: items lost, repeated or reordered",
					svc, p.G, p.I, it.Key, next[p.G])
			}
			next[p.G]++
		}
		for g, n := range next {
			for n < perProducer && !slices.Contains(wants(n), svc) {
				n++
			}
			if n != perProducer {
				t.Errorf("service %s: producer %d's items from %d on were never delivered", svc, g, n)
			}
		}
	}
	checkBacklogs(t, "after every item was delivered", s)
}

// testConcurrentNextTxn: NextTxn called from many goroutines at once binds
// every item to exactly one transaction, and a transaction with a higher ID
// holds newer items.
func testConcurrentNextTxn(t *testing.T, s store.Store) {
	const items, workers = 300, 8
	entries := numbered("n", items, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	ctx := t.Context()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		txns []store.Txn
	)
	for w := range workers {
		wg.Go(func() {
			lim := store.Limits{MaxItems: 1 + w%3, MaxBytes: 1 << 20}
			for {
				tx, err := s.NextTxn(ctx, "a", e, format, lim)
				if err != nil {
					t.Errorf("worker %d: NextTxn: got error %v, want nil", w, err)
					return
				}
				if tx == nil {
					return
				}
				mu.Lock()
				txns = append(txns, *tx)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	slices.SortFunc(txns, func(x, y store.Txn) int {
		switch {
		case x.ID < y.ID:
			return -1
		case x.ID > y.ID:
			return 1
		}
		return 0
	})
	var all []store.Item
	for i, tx := range txns {
		if i > 0 && tx.ID == txns[i-1].ID {
			t.Errorf("two transactions got ID %d, want distinct IDs", tx.ID)
		}
		all = append(all, tx.Items...)
	}
	checkItems(t, "items of all transactions in ID order", all, itemsOf(entries...)...)
	checkTxns(t, "Txns", mustTxns(t, s, "a", 0), txns...)
}
