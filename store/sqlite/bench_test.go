package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/storetest"
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
	storetest.BenchConcurrent(b, s, n, eventData)
	s.w.mu.Lock()
	b.ReportMetric(float64(s.w.calls)/float64(s.w.commits), "calls/commit")
	s.w.mu.Unlock()
}
