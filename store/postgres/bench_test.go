package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/storetest"
)

// benchData is the Data of a benchmark event: about the size of a small
// Matrix message event.
var benchData = []byte(`{"type":"m.room.message","content":{"body":"` + strings.Repeat("x", 400) + `"}}`)

// events returns n event entries for services, keyed from first on.
func events(first, n int, services ...string) []store.Entry {
	entries := make([]store.Entry, n)
	for i := range entries {
		entries[i] = store.Entry{
			Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$%d:bench.example.org", first+i), Data: benchData},
			Services: services,
		}
	}
	return entries
}

// BenchmarkAppend appends batches of events for two services from one
// goroutine: one iteration is one Append, one commit.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			s := newStore(b)
			n := 0
			for b.Loop() {
				if err := s.Append(context.Background(), events(n, size, "a", "b")); err != nil {
					b.Fatal(err)
				}
				n += size
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkAppendWriters appends batches of 100 events for the same two
// services from several stores at once, as several processes would: their
// Appends take turns on the services' locks.
func BenchmarkAppendWriters(b *testing.B) {
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			schema := newSchema(b)
			stores := make([]*Store, writers)
			for i := range stores {
				stores[i] = openStore(b, schema, Options{MaxConns: 2})
			}
			var mu sync.Mutex
			n := 0
			next := func() (int, bool) {
				mu.Lock()
				defer mu.Unlock()
				if n >= b.N*100 {
					return 0, false
				}
				n += 100
				return n - 100, true
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, s := range stores {
				wg.Go(func() {
					for {
						first, ok := next()
						if !ok {
							return
						}
						if err := s.Append(context.Background(), events(first, 100, "a", "b")); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkNextTxnComplete forms and completes transactions of 100 events
// from a backlog: one iteration is one transaction.
func BenchmarkNextTxnComplete(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(b, err)
	n := 0
	lim := store.Limits{MaxItems: 100, MaxBytes: 1 << 20}
	for b.Loop() {
		txn, err := s.NextTxn(ctx, "a", e, 1, lim)
		if err != nil {
			b.Fatal(err)
		}
		if txn == nil {
			b.StopTimer()
			require.NoError(b, s.Append(ctx, events(n, 10000, "a")))
			n += 10000
			b.StartTimer()
			continue
		}
		if err := s.Complete(ctx, "a", e, txn.ID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkConcurrent runs the store as the scheduler does: one appender
// and one consumer per service (see storetest.BenchConcurrent).
func BenchmarkConcurrent(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			s := openStore(b, newSchema(b), Options{MaxConns: int32(n + 2)})
			storetest.BenchConcurrent(b, s, n, func(int) []byte { return benchData })
		})
	}
}
