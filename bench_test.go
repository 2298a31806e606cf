package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// benchServices returns n registrations of 10 realistic namespaces each:
// puppeted users, bot users, aliases and rooms of one bridge per service.
func benchServices(n int) []*Registration {
	var regs []*Registration
	for i := range n {
		r := &Registration{
			ID: fmt.Sprintf("bridge%d", i), URL: "http://127.0.0.1:1", SenderLocalpart: fmt.Sprintf("bridge%dbot", i),
			ASToken: fmt.Sprintf("as%d", i), HSToken: fmt.Sprintf("hs%d", i),
		}
		p := fmt.Sprintf("net%d", i)
		r.Namespaces.Users = []Namespace{
			{Regex: `@` + p + `_.*:example\.org`, Exclusive: true},
			{Regex: `@` + p + `bot:example\.org`, Exclusive: true},
			{Regex: `@` + p + `_[0-9]+:example\.org`},
			{Regex: `@_` + p + `_.*:example\.org`},
		}
		r.Namespaces.Aliases = []Namespace{
			{Regex: `#` + p + `_.*:example\.org`, Exclusive: true},
			{Regex: `#_` + p + `_.*:example\.org`},
			{Regex: `#` + p + `-[a-z]+:example\.org`},
		}
		r.Namespaces.Rooms = []Namespace{
			{Regex: `!` + p + `[A-Za-z]+:example\.org`},
			{Regex: `!portal` + p + `_.*:example\.org`},
			{Regex: `!bridged-` + p + `-.*:example\.org`},
		}
		regs = append(regs, r)
	}
	return regs
}

// BenchmarkInterest measures deciding the interested services among 50
// services of 10 namespaces each, for a mix of member and message events
// from 10,000 distinct senders in 10,000 distinct rooms.
func BenchmarkInterest(b *testing.B) {
	regs := benchServices(50)
	for _, r := range regs {
		if err := r.validate(); err != nil {
			b.Fatal(err)
		}
	}
	es := newEventSorter("example.org", regs, nil)
	const distinct = 10_000
	events := make([]Event, distinct)
	for i := range events {
		sender := fmt.Sprintf("@user%d:example.org", i)
		if i%5 == 0 { // a fifth of the traffic comes from bridged users
			sender = fmt.Sprintf("@net%d_%d:example.org", i%50, i)
		}
		room := fmt.Sprintf("!room%dabc:example.org", i)
		if i%3 == 0 {
			target := fmt.Sprintf("@net%d_%d:example.org", (i+7)%50, i)
			events[i] = member(fmt.Sprintf("$%d", i), room, sender, target)
		} else {
			events[i] = event(fmt.Sprintf("$%d", i), room, sender)
		}
	}
	ctx := context.Background()
	ri := roomInfo{}
	var dst []string
	b.ReportAllocs()
	b.ResetTimer()
	matched := 0
	for i := 0; b.Loop(); i++ {
		var err error
		dst, err = es.interested(ctx, &events[i%distinct], &ri, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		matched += len(dst)
	}
	if matched == 0 {
		b.Fatal("no event matched any service")
	}
}

// benchAS is an application service that decodes every body and counts
// the events it receives.
type benchAS struct {
	srv    *httptest.Server
	events atomic.Int64
	txns   atomic.Int64
}

func newBenchAS(b *testing.B) *benchAS {
	as := &benchAS{}
	as.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		as.events.Add(int64(len(body.Events)))
		as.txns.Add(1)
		_, _ = io.WriteString(w, "{}")
	}))
	b.Cleanup(as.srv.Close)
	return as
}

// benchEvent is a realistic m.room.message of about 400 bytes.
func benchEvent(i int, sender string) Event {
	raw := fmt.Sprintf(`{"event_id":"$%020d:example.org","room_id":"!abcdefghijklmnop:example.org",`+
		`"sender":%q,"type":"m.room.message","origin_server_ts":1700000000000,`+
		`"unsigned":{"age":1234,"transaction_id":"m1700000000000.%d"},`+
		`"content":{"msgtype":"m.text","body":"%s","m.mentions":{}}}`,
		i, sender, i, strings.Repeat("lorem ipsum dolor sit amet ", 8))
	return Event{ID: fmt.Sprintf("$%020d:example.org", i), RoomID: "!abcdefghijklmnop:example.org",
		Sender: sender, Type: "m.room.message", Raw: json.RawMessage(raw)}
}

// BenchmarkDeliver measures events per second from Enqueue to one AS that
// decodes every body: 4 producers calling Enqueue with 100 events per
// call, keeping at most 1,000 events undelivered.
func BenchmarkDeliver(b *testing.B) {
	stores := map[string]func(b *testing.B) store.Store{
		"memory": func(b *testing.B) store.Store { return memory.New() },
		"sqlite": func(b *testing.B) store.Store {
			st, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	for _, name := range []string{"memory", "sqlite"} {
		b.Run("store="+name+"/as=1", func(b *testing.B) {
			const perIter, producers, batch, window = 20_000, 4, 100, 1_000
			as := newBenchAS(b)
			st := stores[name](b)
			defer st.(interface{ Close() error }).Close()
			r := &Registration{ID: "bench", URL: as.srv.URL, ASToken: "as", HSToken: "hs",
				SenderLocalpart: "benchbot", Namespaces: Namespaces{Users: []Namespace{{Regex: `@bench_.*`}}}}
			s, err := New(Config{ServerName: "example.org", Services: []*Registration{r}, Store: st})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := s.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer s.Stop(ctx)
			var next atomic.Int64
			start := time.Now()
			for b.Loop() {
				base := as.events.Load()
				target := base + perIter
				var sent atomic.Int64
				var wg sync.WaitGroup
				for range producers {
					wg.Go(func() {
						for sent.Add(batch) <= perIter {
							for sent.Load()-(as.events.Load()-base) > window {
								time.Sleep(50 * time.Microsecond)
							}
							evs := make([]Event, batch)
							for j := range evs {
								evs[j] = benchEvent(int(next.Add(1)), "@bench_alice:example.org")
							}
							if err := s.Enqueue(ctx, evs...); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				for as.events.Load() < target {
					time.Sleep(50 * time.Microsecond)
				}
			}
			elapsed := time.Since(start)
			total := float64(as.events.Load())
			b.ReportMetric(total/elapsed.Seconds(), "events/s")
			b.ReportMetric(total/float64(as.txns.Load()), "events/txn")
		})
	}
}
