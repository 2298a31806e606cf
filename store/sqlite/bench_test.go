package sqlite

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			s := openStore(b, dbPath(b), Options{Synchronous: SynchronousNormal})
			data := []byte(strings.Repeat("x", 500))
			entries := make([]store.Entry, size)
			n := 0
			for b.Loop() {
				for i := range entries {
					n++
					entries[i] = store.Entry{
						Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$%d", n), Data: data},
						Services: []string{"a", "b"},
					}
				}
				if err := s.Append(context.Background(), entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkNextTxnComplete(b *testing.B) {
	s := openStore(b, dbPath(b), Options{Synchronous: SynchronousNormal})
	ctx := context.Background()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(b, err)
	data := []byte(strings.Repeat("x", 500))
	entries := make([]store.Entry, 1000)
	n := 0
	fill := func() {
		for i := range entries {
			n++
			entries[i] = store.Entry{Item: store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$%d", n), Data: data}, Services: []string{"a"}}
		}
		require.NoError(b, s.Append(ctx, entries))
	}
	lim := store.Limits{MaxItems: 100, MaxBytes: 1 << 20}
	for b.Loop() {
		txn, err := s.NextTxn(ctx, "a", e, 1, lim)
		if err != nil {
			b.Fatal(err)
		}
		if txn == nil {
			b.StopTimer()
			fill()
			b.StartTimer()
			continue
		}
		if err := s.Complete(ctx, "a", e, txn.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConcurrent runs the store as the scheduler does, with the
// default synchronous=FULL: one goroutine appends batches of 100 events of
// about 400 bytes, each batch for the next service in turn, while one
// goroutine per service forms transactions of up to 100 events and
// completes them. The appender keeps at most 1,000 undelivered events per
// service. One iteration is one batch; the figure is events delivered per
// second, until the last one is completed.
func BenchmarkConcurrent(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			benchConcurrent(b, n)
		})
	}
}

func benchConcurrent(b *testing.B, n int) {
	s := openStore(b, dbPath(b), Options{})
	ctx := context.Background()
	services := make([]string, n)
	for i := range services {
		services[i] = fmt.Sprintf("as%d", i)
	}

	var (
		mu          sync.Mutex
		changed     = sync.NewCond(&mu)
		undelivered = make([]int, n) // appended, not yet completed
		appending   = true
	)
	lim := store.Limits{MaxItems: 100, MaxBytes: 1 << 20}
	var consumers sync.WaitGroup
	for k, svc := range services {
		e, err := s.Claim(ctx, svc, "bench", time.Hour)
		require.NoError(b, err)
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
	for i := 0; b.Loop(); i++ {
		k := i % n
		mu.Lock()
		for undelivered[k]+batch > maxUndelivered {
			changed.Wait()
		}
		mu.Unlock()
		appendEvents(b, s, next, batch, batch, services[k])
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
	s.w.mu.Lock()
	b.ReportMetric(float64(s.w.calls)/float64(s.w.commits), "calls/commit")
	s.w.mu.Unlock()
}
