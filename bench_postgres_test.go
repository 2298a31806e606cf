package scheduler

// BenchmarkFailover needs a second process on one PostgreSQL schema: the
// test binary run again as TestBenchChild, a Scheduler on the same schema
// that takes the service's lease first and sends; this process enqueues,
// runs the AS, kills the child and measures until its own first PUT. It
// skips when ASDELIVER_TEST_POSTGRES is not set.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
)

// benchChildEnv holds the child's benchChildSpec as JSON; TestBenchChild
// runs only when it is set.
const benchChildEnv = "ASDELIVER_BENCH_CHILD"

// benchChildSpec tells the child what to run: a Scheduler on Schema (of
// the database of pgtest.DSN) for service as0 of benchReg at URL.
type benchChildSpec struct {
	Schema   string
	URL      string
	HSToken  string
	LeaseTTL time.Duration // Config.LeaseTTL; 0 for the default
	// Warm is the index of the event (benchEvent) the child enqueues once
	// started: its delivery tells the parent that the child holds the
	// lease.
	Warm int
}

// TestBenchChild is the child process of the benchmarks of this file; on
// its own it skips. It runs a Scheduler as its spec says, enqueues the
// warm-up event, and stops the Scheduler when its standard input ends
// (the parent closed it, or died).
func TestBenchChild(t *testing.T) {
	var spec benchChildSpec
	ChildSpec(t, benchChildEnv, "the PostgreSQL benchmarks", &spec)
	ctx := context.Background()
	st, err := postgres.OpenWithOptions(ctx, pgtest.DSN(t), postgres.Options{Schema: spec.Schema})
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Close()) }()
	s, err := New(Config{
		ServerName: "example.org",
		Services:   []*Registration{benchReg(0, spec.URL, spec.HSToken)},
		Store:      st,
		LeaseTTL:   spec.LeaseTTL,
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Enqueue(ctx, benchEvent(spec.Warm, benchSender(0))))
	_, _ = io.Copy(io.Discard, os.Stdin)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(sctx))
}

// benchChild is a running TestBenchChild.
type benchChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    bytes.Buffer // its output; read only once done is closed
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
	killed bool
}

// startBenchChild starts a child process for spec. At cleanup it closes
// the child's standard input, so that it stops cleanly, and fails b if it
// does not (unless it was killed).
func startBenchChild(b *testing.B, spec benchChildSpec) *benchChild {
	c := &benchChild{cmd: ChildCmd(b, "TestBenchChild", benchChildEnv, time.Hour, spec), done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		b.Fatalf("starting the benchmark's child process: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	b.Cleanup(func() {
		_ = c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
			b.Errorf("the benchmark's child process did not stop within 30 s of its input ending:\n%s", c.out.String())
			return
		}
		if c.err != nil && !c.killed {
			b.Errorf("the benchmark's child process failed: %v\n%s", c.err, c.out.String())
		}
	})
	return c
}

// kill kills the child with SIGKILL, as kill -9 would.
func (c *benchChild) kill(b *testing.B) {
	c.killed = true
	if err := c.cmd.Process.Kill(); err != nil {
		b.Fatalf("killing the benchmark's child process: %v", err)
	}
}

// waitEvents waits until as has received n events, failing b if the
// child process exits first or a minute passes.
func (c *benchChild) waitEvents(b *testing.B, as *astest.Server, n int) {
	deadline := time.Now().Add(time.Minute)
	for as.Stats().Events < n {
		select {
		case <-c.done:
			b.Fatalf("the benchmark's child process exited (%v) before the AS had %d events:\n%s", c.err, n, c.out.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("the AS had %d events after a minute, not %d", as.Stats().Events, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchSendWatch is the HTTP transport of this process's Scheduler in the
// benchmarks of this file: it records when it first sends, that is, when
// this process first acts as the service's sender.
type benchSendWatch struct {
	base  *http.Transport
	first atomic.Pointer[time.Time]
}

// newBenchSendWatch returns a benchSendWatch whose idle connections are
// closed at cleanup (after a Scheduler started later has stopped).
func newBenchSendWatch(b *testing.B) *benchSendWatch {
	w := &benchSendWatch{base: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.Cleanup(w.base.CloseIdleConnections)
	return w
}

func (w *benchSendWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now()
	w.first.CompareAndSwap(nil, &now)
	return w.base.RoundTrip(r)
}

// client returns a client that sends through w.
func (w *benchSendWatch) client() *http.Client { return &http.Client{Transport: w} }

// sent reports whether anything was sent through w, and when it first was.
func (w *benchSendWatch) sent() (time.Time, bool) {
	if t := w.first.Load(); t != nil {
		return *t, true
	}
	return time.Time{}, false
}

// BenchmarkFailover measures the hand-over of a service whose sender dies
// without releasing its lease, with Config.LeaseTTL 5 s and the default
// PollInterval. A child process holds the lease and delivers the events
// that this process enqueues (100 a second, one per call); at a random
// moment of its renewal period it is killed with SIGKILL, while this
// process's Scheduler, which enqueues the events, waits to take over.
// failover-ms is the time from the kill to the first PUT this process
// sends.
func BenchmarkFailover(b *testing.B) {
	pgtest.DSN(b) // skip before any work
	var total time.Duration
	n := 0
	for b.Loop() {
		total += benchFailoverOnce(b, 5*time.Second)
		n++
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "failover-ms")
}

// benchFailoverOnce runs one kill of BenchmarkFailover on a schema of its
// own and returns the failover time.
func benchFailoverOnce(b *testing.B, leaseTTL time.Duration) time.Duration {
	schema := pgtest.NewSchema(b)
	as := newBenchAS(b)
	child := startBenchChild(b, benchChildSpec{Schema: schema, URL: as.URL(), HSToken: as.HSToken(), LeaseTTL: leaseTTL})
	child.waitEvents(b, as, 1) // the child holds the lease
	watch := newBenchSendWatch(b)
	st := openBenchPostgres(b, schema)
	s, err := New(Config{
		ServerName: "example.org", Services: benchRegs([]*astest.Server{as}), Store: st,
		LeaseTTL: leaseTTL, HTTPClient: watch.client(),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	}()

	// Traffic, enqueued here, sent by the child until the kill.
	ctx, stopTraffic := context.WithCancel(context.Background())
	var traffic sync.WaitGroup
	defer traffic.Wait()
	defer stopTraffic()
	traffic.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for k := 1; ; k++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := s.Enqueue(context.Background(), benchEvent(k, benchSender(0))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	child.waitEvents(b, as, 101) // a second of traffic delivered by the child
	time.Sleep(rand.N(leaseTTL / leaseRenewals))
	if _, ok := watch.sent(); ok {
		b.Fatal("this process sent before the kill: the child did not hold the lease")
	}
	killed := time.Now()
	child.kill(b)
	deadline := killed.Add(time.Minute)
	for {
		if first, ok := watch.sent(); ok {
			return first.Sub(killed)
		}
		if time.Now().After(deadline) {
			b.Fatal("no PUT from this process within a minute of the kill")
		}
		time.Sleep(time.Millisecond)
	}
}

// benchReg is registration i of benchRegs, for an AS at url.
func benchReg(i int, url, hsToken string) *Registration {
	return &Registration{
		ID: fmt.Sprintf("as%d", i), URL: url, ASToken: fmt.Sprintf("as-token-%d", i),
		HSToken: hsToken, SenderLocalpart: fmt.Sprintf("as%dbot", i),
		Namespaces: Namespaces{Users: []Namespace{{Regex: fmt.Sprintf(`@as%d_.*:example\.org`, i), Exclusive: true}}},
	}
}

// openBenchPostgres opens a PostgreSQL store on schema, as one process of
// several sharing it would, and closes it at cleanup (before the schema
// is dropped).
func openBenchPostgres(b testing.TB, schema string) *postgres.Store {
	st, err := postgres.OpenWithOptions(context.Background(), pgtest.DSN(b), postgres.Options{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return st
}

// benchLatencyCrossProcess is BenchmarkLatency/store=postgres/cross-process:
// a child process holds the service's lease and sends; this process
// enqueues, and its own Scheduler, which waits for the lease, must send
// nothing.
func benchLatencyCrossProcess(b *testing.B) {
	schema := pgtest.NewSchema(b)
	rec := newLatencyRecorder()
	as := newBenchAS(b)
	rec.watch(as)
	child := startBenchChild(b, benchChildSpec{Schema: schema, URL: as.URL(), HSToken: as.HSToken(), Warm: len(rec.lat)})
	child.waitEvents(b, as, 1) // the child holds the lease
	watch := newBenchSendWatch(b)
	s := startBench(b, Config{Services: benchRegs([]*astest.Server{as}), Store: openBenchPostgres(b, schema),
		HTTPClient: watch.client()})
	rec.run(b, s, 1)
	if _, ok := watch.sent(); ok {
		b.Fatal("this process sent: the child did not hold the lease throughout, so the latency was not cross-process")
	}
}
