package scheduler

// Benchmarks of the whole pipeline. Application services (astest servers
// keeping only counts) run on 127.0.0.1 in this process, decode every body
// into events with encoding/json and answer {}. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x .
//
// Each reports its figures with b.ReportMetric, for benchstat.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
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
// services of 10 namespaces each, for a fixed mix of member and message
// events from 10,000 distinct senders in 10,000 distinct rooms, the room
// hook excluded.
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
	ri := interest.Rooms{}
	var dst []string
	b.ReportAllocs()
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

// newBenchAS starts an application service (hs_token "hs") that decodes
// every body into events and keeps only counts, so that its memory does not
// grow with the traffic.
func newBenchAS(b *testing.B) *astest.Server {
	as := astest.New(b, "hs")
	as.CountOnly()
	return as
}

// benchEventID is a realistic event ID: since room version 4 it is a hash
// of the event, so IDs arrive in no order. The number after the last '_'
// identifies the event to the benchmark (benchEventIndex).
func benchEventID(i int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return "$" + base64.RawURLEncoding.EncodeToString(sum[:])[:32] + "_" + strconv.Itoa(i)
}

// benchEventIndex returns i of benchEventID(i).
func benchEventIndex(id string) (int, error) {
	return strconv.Atoi(id[strings.LastIndexByte(id, '_')+1:])
}

// benchEvent is a realistic m.room.message of about 400 bytes.
func benchEvent(i int, sender string) Event {
	id := benchEventID(i)
	raw := `{"content":{"body":"` + strings.Repeat("lorem ipsum dolor sit amet ", 6) + strconv.Itoa(i) +
		`","m.mentions":{},"msgtype":"m.text"},"event_id":"` + id +
		`","origin_server_ts":1764288000000,"room_id":"!kHjTzQeWPqLmNoPr:example.org","sender":"` + sender +
		`","type":"m.room.message","unsigned":{"age":1234,"transaction_id":"m1764288000000.` + strconv.Itoa(i) + `"}}`
	return Event{ID: id, RoomID: "!kHjTzQeWPqLmNoPr:example.org", Sender: sender, Type: "m.room.message", Raw: json.RawMessage(raw)}
}

// benchRegs returns n registrations pointing at the given ASes, service i
// owning the users @as<i>_*.
func benchRegs(ases []*astest.Server) []*Registration {
	regs := make([]*Registration, len(ases))
	for i, as := range ases {
		regs[i] = &Registration{
			ID: fmt.Sprintf("as%d", i), URL: as.URL(), ASToken: fmt.Sprintf("as-token-%d", i),
			HSToken: as.HSToken(), SenderLocalpart: fmt.Sprintf("as%dbot", i),
			Namespaces: Namespaces{Users: []Namespace{{Regex: fmt.Sprintf(`@as%d_.*:example\.org`, i), Exclusive: true}}},
		}
	}
	return regs
}

func benchSender(service int) string { return fmt.Sprintf("@as%d_alice:example.org", service) }

// benchStore opens a store of the named kind for one benchmark.
func benchStore(b *testing.B, kind string) store.Store {
	switch kind {
	case "memory":
		st := memory.New()
		b.Cleanup(func() { _ = st.Close() })
		return st
	case "sqlite", "sqlite-normal":
		opts := sqlite.Options{}
		if kind == "sqlite-normal" {
			opts.Synchronous = sqlite.SynchronousNormal
		}
		st, err := sqlite.OpenWithOptions(filepath.Join(b.TempDir(), "bench.db"), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		return st
	case "postgres":
		return openBenchPostgres(b, pgtest.NewSchema(b))
	}
	b.Fatalf("unknown store %q", kind)
	return nil
}

// startBench starts a Scheduler for a benchmark, stopping it at cleanup.
func startBench(b *testing.B, cfg Config) *Scheduler {
	cfg.ServerName = "example.org"
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return s
}

// resetPeakRSS returns memory to the OS and resets the kernel's peak-RSS
// mark, so peakRSSMiB reports the peak of what runs after it.
func resetPeakRSS() {
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSSMiB reads VmHWM, the peak resident set since resetPeakRSS.
func peakRSSMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// ceilingEventsPerSecond measures a bare loop of sequential 100-event PUTs
// to one benchmark AS: the most events per second the wire allows, against
// which a pipeline is judged within the same run.
func ceilingEventsPerSecond(b *testing.B) float64 {
	as := newBenchAS(b)
	const n, perTxn = 400, 100
	events := make([][]byte, perTxn)
	for i := range events {
		events[i] = benchEvent(i, benchSender(0)).Raw
	}
	body := append(append([]byte(`{"events":[`), bytes.Join(events, []byte(","))...), "]}"...)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	start := time.Now()
	for i := range n {
		req, err := http.NewRequest(http.MethodPut, as.URL()+"/_matrix/app/v1/transactions/"+strconv.Itoa(i+1), bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer hs")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return float64(n*perTxn) / time.Since(start).Seconds()
}

// BenchmarkDeliver measures events per second from Enqueue to the ASes: 4
// producers call Enqueue with 100 events each, keeping at most 1,000
// events undelivered per AS; 200,000 events per iteration.
func BenchmarkDeliver(b *testing.B) {
	for _, c := range []struct {
		store string
		ases  int
	}{{"sqlite", 1}, {"sqlite", 10}, {"memory", 1}, {"sqlite-normal", 1}, {"postgres", 1}, {"postgres", 10}} {
		b.Run(fmt.Sprintf("store=%s/as=%d", c.store, c.ases), func(b *testing.B) {
			ceiling := ceilingEventsPerSecond(b)
			const perIter, producers, batch, window = 200_000, 4, 100, 1_000
			ases := make([]*astest.Server, c.ases)
			for i := range ases {
				ases[i] = newBenchAS(b)
			}
			s := startBench(b, Config{Services: benchRegs(ases), Store: benchStore(b, c.store)})
			ctx := context.Background()
			delivered := func() int64 {
				var n int64
				for _, as := range ases {
					n += int64(as.Stats().Events)
				}
				return n
			}
			resetPeakRSS()
			var next atomic.Int64
			var elapsed time.Duration
			for b.Loop() {
				start := time.Now()
				base := delivered()
				sentTo := make([]atomic.Int64, c.ases) // per AS, events accepted
				before := make([]int64, c.ases)        // per AS, events delivered before
				for i, as := range ases {
					before[i] = int64(as.Stats().Events)
				}
				var wg sync.WaitGroup
				for p := range producers {
					wg.Go(func() {
						for k := p; ; k += producers {
							if int64(k+1)*batch > perIter {
								return
							}
							svc := k % c.ases
							for sentTo[svc].Load()-(int64(ases[svc].Stats().Events)-before[svc]) >= window {
								time.Sleep(20 * time.Microsecond)
							}
							evs := make([]Event, batch)
							for j := range evs {
								evs[j] = benchEvent(int(next.Add(1)), benchSender(svc))
							}
							sentTo[svc].Add(batch)
							if err := s.Enqueue(ctx, evs...); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				for delivered()-base < perIter {
					time.Sleep(20 * time.Microsecond)
				}
				elapsed += time.Since(start)
			}
			var txns int64
			for _, as := range ases {
				txns += int64(as.Stats().Txns)
			}
			rate := float64(perIter*b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(rate/ceiling, "of-ceiling")
			b.ReportMetric(peakRSSMiB(), "peak-rss-MiB")
			b.ReportMetric(float64(perIter*b.N)/float64(txns), "events/txn")
		})
	}
}

// BenchmarkLatency measures the time from an Enqueue call to the AS
// receiving the event, for one paced producer offering 20,000 events/s in
// total for 3 s, one event per call. cross-process enqueues in this
// process and sends from another one on the same PostgreSQL schema (see
// bench_postgres_test.go).
func BenchmarkLatency(b *testing.B) {
	for _, c := range []struct {
		store string
		ases  int
	}{{"sqlite", 1}, {"sqlite", 10}, {"postgres", 1}} {
		b.Run(fmt.Sprintf("store=%s/as=%d", c.store, c.ases), func(b *testing.B) {
			rec := newLatencyRecorder()
			ases := make([]*astest.Server, c.ases)
			for i := range ases {
				ases[i] = newBenchAS(b)
				rec.watch(ases[i])
			}
			s := startBench(b, Config{Services: benchRegs(ases), Store: benchStore(b, c.store)})
			rec.run(b, s, c.ases)
		})
	}
	b.Run("store=postgres/cross-process", benchLatencyCrossProcess)
}

// latencyRecorder measures BenchmarkLatency's events from Enqueue to an AS.
type latencyRecorder struct {
	sent []time.Time     // per event index, when Enqueue was called
	lat  []time.Duration // per event index, the latency
	seen atomic.Int64    // events received
}

// latencyRate and latencyDuration are the offered load of BenchmarkLatency.
const latencyRate, latencyDuration = 20_000, 3 * time.Second

func newLatencyRecorder() *latencyRecorder {
	total := int(latencyRate * latencyDuration / time.Second)
	return &latencyRecorder{sent: make([]time.Time, total), lat: make([]time.Duration, total)}
}

// watch records the events as receives; events of other indexes (such as
// a warm-up event) are ignored.
func (l *latencyRecorder) watch(as *astest.Server) {
	as.Respond(func(r astest.Request) astest.Answer {
		for _, e := range r.Txn.Events {
			k, err := benchEventIndex(e.ID)
			if err == nil && k < len(l.lat) {
				l.lat[k] = time.Since(l.sent[k])
				l.seen.Add(1)
			}
		}
		return astest.Answer{}
	})
}

// run offers the load to s, event k for service k%services, and reports
// the percentiles.
func (l *latencyRecorder) run(b *testing.B, s *Scheduler, services int) {
	ctx := context.Background()
	total := len(l.lat)
	var all []time.Duration
	for b.Loop() {
		l.seen.Store(0)
		clear(l.lat)
		// Open loop: each event is offered at its due time in a call of
		// its own, whatever the earlier calls are doing, as a
		// homeserver's many request handlers would.
		start := time.Now()
		var calls sync.WaitGroup
		for k := range total {
			due := start.Add(time.Duration(k) * time.Second / latencyRate)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			ev := benchEvent(k, benchSender(k%services))
			l.sent[k] = time.Now()
			calls.Go(func() {
				if err := s.Enqueue(ctx, ev); err != nil {
					b.Error(err)
				}
			})
		}
		calls.Wait()
		for l.seen.Load() < int64(total) {
			time.Sleep(time.Millisecond)
		}
		all = append(all, l.lat...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkCatchup enqueues 1,000,000 events for an AS that is down, then
// brings it up and calls ServiceUp, and measures the time from that call
// to the last event received.
func BenchmarkCatchup(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run("store="+kind, func(b *testing.B) { benchCatchup(b, kind) })
	}
}

func benchCatchup(b *testing.B, kind string) {
	const total, batch = 1_000_000, 1000
	for b.Loop() {
		b.StopTimer()
		as := newBenchAS(b)
		as.Down()
		cfg := Config{Services: benchRegs([]*astest.Server{as}), Store: benchStore(b, kind),
			RetryInitial: time.Hour, RetryMax: time.Hour}
		s := startBench(b, cfg)
		ctx := context.Background()
		evs := make([]Event, batch)
		for k := 0; k < total; k += batch {
			for j := range evs {
				evs[j] = benchEvent(k+j, benchSender(0))
			}
			if err := s.Enqueue(ctx, evs...); err != nil {
				b.Fatal(err)
			}
		}
		for {
			st, err := s.Status(ctx, "as0")
			if err != nil {
				b.Fatal(err)
			}
			if st.State == StateDown {
				break
			}
			time.Sleep(time.Millisecond)
		}
		resetPeakRSS()
		before := as.Stats()
		b.StartTimer()
		start := time.Now()
		as.Up()
		s.ServiceUp("as0")
		for as.Stats().Events-before.Events < total {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		got := as.Stats()
		events := float64(got.Events - before.Events)
		b.ReportMetric(events/elapsed.Seconds(), "drain-events/s")
		b.ReportMetric(peakRSSMiB(), "peak-rss-MiB")
		b.ReportMetric(events/float64(got.Txns-before.Txns), "events/txn")
	}
}

// BenchmarkEnqueue measures durable Enqueue throughput, into SQLite with
// synchronous=FULL and into PostgreSQL, for events of one AS that is down
// (so nothing is sent).
func BenchmarkEnqueue(b *testing.B) {
	for _, c := range []struct {
		store string
		batch int
	}{{"sqlite", 100}, {"sqlite", 1}, {"postgres", 100}, {"postgres", 1}} {
		b.Run(fmt.Sprintf("store=%s/producers=8/batch=%d", c.store, c.batch), func(b *testing.B) {
			batch := c.batch
			const producers = 8
			perIter := 100_000
			if batch == 1 {
				perIter = 10_000
			}
			as := newBenchAS(b)
			as.Down()
			s := startBench(b, Config{Services: benchRegs([]*astest.Server{as}), Store: benchStore(b, c.store),
				RetryInitial: time.Hour, RetryMax: time.Hour})
			ctx := context.Background()
			var next atomic.Int64
			for b.Loop() {
				var wg sync.WaitGroup
				var sent atomic.Int64
				for range producers {
					wg.Go(func() {
						evs := make([]Event, batch)
						for sent.Add(int64(batch)) <= int64(perIter) {
							for j := range evs {
								evs[j] = benchEvent(int(next.Add(1)), benchSender(0))
							}
							if err := s.Enqueue(ctx, evs...); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(perIter*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
