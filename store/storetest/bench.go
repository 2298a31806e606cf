package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// BenchConcurrent runs s as the scheduler does, for a store's own
// benchmark: one goroutine appends batches of 100 events, each batch for
// the next of services services in turn, while one goroutine per service
// forms transactions of up to 100 events and completes them. The appender
// keeps at most 1,000 undelivered events per service. One iteration is one
// batch; BenchConcurrent reports events delivered per second ("events/s"),
// until the last one is completed. data returns the Data of the n-th event.
// s must be empty and not used by anything else meanwhile.
func BenchConcurrent(b *testing.B, s store.Store, services int, data func(n int) []byte) {
	b.Helper()
	ctx := context.Background()
	names := make([]string, services)
	for i := range names {
		names[i] = fmt.Sprintf("as%d", i)
	}

	var (
		mu          sync.Mutex
		changed     = sync.NewCond(&mu)
		undelivered = make([]int, services) // appended, not yet completed
		appending   = true
	)
	lim := store.Limits{MaxItems: 100, MaxBytes: 1 << 20}
	var consumers sync.WaitGroup
	for k, svc := range names {
		e, err := s.Claim(ctx, svc, "bench", time.Hour)
		if err != nil {
			b.Fatalf("Claim(%q): %v", svc, err)
		}
		consumers.Go(func() {
			for {
				txn, err := s.NextTxn(ctx, svc, e, 1, lim)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				if txn == nil {
					if !appending && undelivered[k] == 0 {
						mu.Unlock()
						return
					}
					if undelivered[k] == 0 {
						changed.Wait() // for the appender
					}
					mu.Unlock()
					continue
				}
				mu.Unlock()
				if err := s.Complete(ctx, svc, e, txn.ID); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				undelivered[k] -= len(txn.Items)
				changed.Broadcast()
				mu.Unlock()
			}
		})
	}

	const batch, maxUndelivered = 100, 1000
	next := 0
	start := time.Now()
	entries := make([]store.Entry, batch)
	for i := 0; b.Loop(); i++ {
		k := i % services
		mu.Lock()
		for undelivered[k]+batch > maxUndelivered {
			changed.Wait()
		}
		mu.Unlock()
		for j := range entries {
			n := next + j
			entries[j] = store.Entry{
				Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$event-%d:example.org", n), Data: data(n)},
				Services: names[k : k+1],
			}
		}
		if err := s.Append(ctx, entries); err != nil {
			b.Fatalf("Append: %v", err)
		}
		next += batch
		mu.Lock()
		undelivered[k] += batch
		changed.Broadcast()
		mu.Unlock()
	}
	mu.Lock()
	appending = false
	changed.Broadcast()
	mu.Unlock()
	consumers.Wait()
	b.ReportMetric(float64(next)/time.Since(start).Seconds(), "events/s")
}
