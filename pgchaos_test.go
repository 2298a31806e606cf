package scheduler

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
)

// The multi-process chaos test: three scheduler processes (this test
// binary, started again as TestPostgresChaosChild) share one PostgreSQL
// schema, each enqueueing events of its own for three application
// services, while the test kills with SIGKILL whichever process sends to
// one of them, round after round, cuts the database connections of
// another, and, in TestPostgresChaosRestart, restarts PostgreSQL itself.
// Then it checks what the issue of several processes promises: every
// acknowledged event delivered, each producer's events in its order, one
// body per transaction ID, never two PUTs at once to one service, and
// every duplicate explained.

const (
	// chaosSpecEnv carries a child's chaosSpec.
	chaosSpecEnv = "ASDELIVER_PG_CHAOS_SPEC"
	// chaosRoundsEnv overrides the number of rounds (default 25: 20 kills
	// and 5 connection cuts).
	chaosRoundsEnv = "ASDELIVER_PG_CHAOS_ROUNDS"
	// chaosRestartEnv holds the shell command that restarts PostgreSQL,
	// for TestPostgresChaosRestart.
	chaosRestartEnv = "ASDELIVER_TEST_POSTGRES_RESTART"
	// chaosHeader names the process that sent a request: "slot.incarnation".
	chaosHeader = "X-Asdeliver-Chaos-Process"
	// chaosServices is how many application services the processes share.
	chaosServices = 3
	// chaosLease is the processes' Config.LeaseTTL: failover after a kill
	// takes about this plus the store's poll interval.
	chaosLease = time.Second
)

// chaosSpec is what a child process is told.
type chaosSpec struct {
	DSN, Schema string
	Slot, Inc   int      // which process it is, and which incarnation of it
	URLs        []string // of the application services
}

// chaosTag names an incarnation of a process slot, as chaosHeader does.
func chaosTag(slot, inc int) string { return fmt.Sprintf("%d.%d", slot, inc) }

// chaosEventID is the ID of event seq of an incarnation.
func chaosEventID(tag string, seq int) string { return fmt.Sprintf("$c%s.%d", tag, seq) }

// chaosSender is the sender of event seq: of one service's namespace in
// turn, or of the namespace all of them share.
func chaosSender(seq int) string {
	if k := seq % (chaosServices + 1); k < chaosServices {
		return fmt.Sprintf("@k%d_u:example.org", k)
	}
	return "@all_u:example.org"
}

// chaosWants reports whether service k wants event seq.
func chaosWants(k, seq int) bool {
	j := seq % (chaosServices + 1)
	return j == k || j == chaosServices
}

// chaosRegistrations returns the registrations of the services at urls.
func chaosRegistrations(urls []string) ([]*Registration, error) {
	var regs []*Registration
	for k, u := range urls {
		r, err := ParseRegistration(fmt.Appendf(nil, "id: chaos-%d\nurl: %s\nas_token: as-chaos-%d\nhs_token: hs-chaos-%d\n"+
			"sender_localpart: chaosbot%d\nnamespaces:\n  users:\n    - {exclusive: false, regex: '@k%d_.*'}\n"+
			"    - {exclusive: false, regex: '@all_.*'}\n", k, u, k, k, k, k))
		if err != nil {
			return nil, err
		}
		regs = append(regs, r)
	}
	return regs, nil
}

// TestPostgresChaosChild is one scheduler process of the chaos tests; it
// runs only when they start it. It enqueues its events in calls of 1 to
// 10, printing "acked N" once every event up to N is durable and
// "retry A B" when a call failed and is made again. The line "stop" on its
// standard input ends the enqueueing ("produced"); the end of its input
// stops the scheduler cleanly.
func TestPostgresChaosChild(t *testing.T) {
	var spec chaosSpec
	ChildSpec(t, chaosSpecEnv, "the PostgreSQL chaos tests", &spec)
	ctx := context.Background()
	tag := chaosTag(spec.Slot, spec.Inc)
	sep := "?"
	if strings.Contains(spec.DSN, "?") {
		sep = "&"
	}
	dsn := spec.DSN + sep + "application_name=asdeliver-chaos-" + tag
	st, err := postgres.OpenWithOptions(ctx, dsn, postgres.Options{Schema: spec.Schema, PollInterval: 200 * time.Millisecond})
	require.NoError(t, err)
	defer st.Close()
	regs, err := chaosRegistrations(spec.URLs)
	require.NoError(t, err)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections() // the client is ours, not the scheduler's
	s, err := New(Config{ServerName: "example.org", Services: regs, Store: st,
		HTTPClient: &http.Client{Transport: TagTransport{chaosHeader, tag, transport}},
		LeaseTTL:   chaosLease, PollInterval: 200 * time.Millisecond,
		RetryInitial: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))

	stop := make(chan struct{})
	input := bufio.NewScanner(os.Stdin)
	go func() {
		for input.Scan() {
			if input.Text() == "stop" {
				close(stop)
				break
			}
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	rng := rand.New(rand.NewPCG(uint64(spec.Slot), uint64(spec.Inc)))
	for seq := 0; ; {
		select {
		case <-stop:
			fmt.Fprintln(out, "produced")
			_ = out.Flush()
			_, _ = io.Copy(io.Discard, os.Stdin) // until the test is done
			stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			require.NoError(t, s.Stop(stopCtx))
			return
		default:
		}
		n := 1 + rng.IntN(10)
		events := make([]Event, n)
		for i := range events {
			events[i] = event(chaosEventID(tag, seq+i), "!r:example.org", chaosSender(seq+i))
		}
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				fmt.Fprintf(out, "retry %d %d\n", seq, seq+n-1)
				_ = out.Flush()
				time.Sleep(100 * time.Millisecond)
			}
			if err := s.Enqueue(ctx, events...); err == nil {
				break
			}
		}
		seq += n
		fmt.Fprintf(out, "acked %d\n", seq-1)
		_ = out.Flush()
		time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
	}
}

// chaosProc is a running child, seen from the test.
type chaosProc struct {
	slot, inc int
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	done      chan struct{} // closed when its output ends

	mu       sync.Mutex
	acked    int      // last acknowledged seq, -1 for none
	retried  [][2]int // seq ranges enqueued again after a failed call
	produced bool
	killed   bool
}

func (p *chaosProc) tag() string { return chaosTag(p.slot, p.inc) }

// chaosRun is one run of the chaos harness.
type chaosRun struct {
	t      *testing.T
	dsn    string
	schema string
	ases   []*astest.Server
	procs  []*chaosProc // every incarnation ever started
	live   []*chaosProc // by slot
	kills  int
	cuts   int
	fails  []time.Duration // kill to the first PUT by another process
}

func newChaosRun(t *testing.T) *chaosRun {
	r := &chaosRun{t: t, dsn: pgtest.DSN(t), schema: pgtest.NewSchema(t)}
	// One Open creates the schema before the processes start.
	st, err := postgres.OpenWithOptions(context.Background(), r.dsn, postgres.Options{Schema: r.schema})
	require.NoError(t, err)
	require.NoError(t, st.Close())
	for k := range chaosServices {
		as := astest.New(t, fmt.Sprintf("hs-chaos-%d", k))
		// A little time in each answer, so that kills land mid-PUT too.
		as.Respond(func(req astest.Request) astest.Answer {
			return astest.Answer{Delay: time.Duration(req.N%4) * time.Millisecond}
		})
		r.ases = append(r.ases, as)
	}
	t.Cleanup(func() {
		for _, p := range r.procs {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	for slot := range 3 {
		r.live = append(r.live, r.spawn(slot, 0))
	}
	return r
}

// spawn starts incarnation inc of process slot.
func (r *chaosRun) spawn(slot, inc int) *chaosProc {
	t := r.t
	var urls []string
	for _, as := range r.ases {
		urls = append(urls, as.URL())
	}
	cmd := ChildCmd(t, "TestPostgresChaosChild", chaosSpecEnv, 10*time.Minute, chaosSpec{DSN: r.dsn, Schema: r.schema, Slot: slot, Inc: inc, URLs: urls})
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &chaosProc{slot: slot, inc: inc, cmd: cmd, stdin: stdin, acked: -1, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			p.mu.Lock()
			switch {
			case len(f) == 2 && f[0] == "acked":
				p.acked, _ = strconv.Atoi(f[1])
			case len(f) == 3 && f[0] == "retry":
				a, _ := strconv.Atoi(f[1])
				b, _ := strconv.Atoi(f[2])
				p.retried = append(p.retried, [2]int{a, b})
			case len(f) == 1 && f[0] == "produced":
				p.produced = true
			}
			p.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	r.procs = append(r.procs, p)
	return p
}

// sender returns the live process that sent service k's latest request,
// or nil.
func (r *chaosRun) sender(k int) *chaosProc {
	reqs := r.ases[k].Requests()
	if len(reqs) == 0 {
		return nil
	}
	tag := reqs[len(reqs)-1].Header.Get(chaosHeader)
	for _, p := range r.live {
		if p.tag() == tag {
			return p
		}
	}
	return nil
}

// kill kills p with SIGKILL, starts its next incarnation, and waits for
// the first PUT to service k by another process, recording how long that
// took.
func (r *chaosRun) kill(p *chaosProc, k int) {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	at := time.Now()
	require.NoError(r.t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
	r.kills++
	r.live[p.slot] = r.spawn(p.slot, p.inc+1)
	r.waitFailover(k, p.tag(), at)
}

// cut terminates the database connections of p, which must stop sending
// before its lease runs out, and waits until service k is served again.
func (r *chaosRun) cut(p *chaosProc, k int) {
	at := time.Now()
	r.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
		"asdeliver-chaos-"+p.tag())
	r.cuts++
	r.waitFailover(k, "", at)
}

// waitFailover waits until service k gets a request after at from a
// process other than gone ("" for any), and records the time it took.
func (r *chaosRun) waitFailover(k int, gone string, at time.Time) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, req := range r.ases[k].Requests() {
			if tag := req.Header.Get(chaosHeader); req.Arrived.After(at) && tag != gone {
				if gone != "" {
					r.fails = append(r.fails, req.Arrived.Sub(at))
				}
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Fatalf("service %d got no request from another process within 60s of the kill of %s", k, gone)
}

// exec runs sql on a connection of its own.
func (r *chaosRun) exec(sql string, args ...any) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.dsn)
	require.NoError(r.t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(r.t, err)
}

// finish stops the producers, waits until every acknowledged event has
// arrived, stops the processes cleanly and checks the guarantees.
func (r *chaosRun) finish() {
	t := r.t
	for _, p := range r.live {
		_, err := io.WriteString(p.stdin, "stop\n")
		require.NoError(t, err)
	}
	waitFor(t, "every process to stop enqueueing", func() bool {
		for _, p := range r.live {
			if _, produced := p.state(); !produced {
				return false
			}
		}
		return true
	})
	want := r.expected()
	for k, as := range r.ases {
		ids := want[k]
		deadline := time.Now().Add(60 * time.Second)
		for !isSubset(ids, as.Delivered()) {
			require.True(t, time.Now().Before(deadline), "service %d: acknowledged events missing after 60s", k)
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, p := range r.live {
		require.NoError(t, p.stdin.Close())
		<-p.done
		require.True(t, p.cmd.ProcessState.Success(), "process %s did not stop cleanly: %v", p.tag(), p.cmd.ProcessState)
	}
	r.check(want)
}

// state returns the last acknowledged seq of p and whether it is done
// enqueueing.
func (p *chaosProc) state() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked, p.produced
}

// expected returns, per service, the IDs of the acknowledged events it
// wants.
func (r *chaosRun) expected() [][]string {
	want := make([][]string, chaosServices)
	for _, p := range r.procs {
		acked, _ := p.state()
		for seq := 0; seq <= acked; seq++ {
			for k := range chaosServices {
				if chaosWants(k, seq) {
					want[k] = append(want[k], chaosEventID(p.tag(), seq))
				}
			}
		}
	}
	return want
}

// isSubset reports whether every ID of want is in got.
func isSubset(want, got []string) bool {
	have := make(map[string]bool, len(got))
	for _, id := range got {
		have[id] = true
	}
	for _, id := range want {
		if !have[id] {
			return false
		}
	}
	return true
}

// check verifies the guarantees on what the services received, and logs
// the counts and the failover times.
func (r *chaosRun) check(want [][]string) {
	t := r.t
	procs := make(map[string]*chaosProc)
	for _, p := range r.procs {
		procs[p.tag()] = p
	}
	var resent, replayed, unacked, events, txns int
	for k, as := range r.ases {
		assert.Empty(t, as.Problems(), "service %d: a transaction ID with other bytes, or a malformed request", k)
		assert.LessOrEqual(t, as.Stats().MaxInFlight, 1, "service %d: two PUTs at once", k)
		acked := make(map[string]bool)
		for _, id := range want[k] {
			acked[id] = true
		}
		// Each producer incarnation's events arrive in its order.
		last := make(map[string]int)
		for _, id := range as.Delivered() {
			tag, seq, ok := parseChaosID(id)
			require.True(t, ok, "service %d got an event nobody sent: %s", k, id)
			if prev, seen := last[tag]; seen {
				assert.Greater(t, seq, prev, "service %d: %s after seq %d of the same producer", k, id, prev)
			}
			last[tag] = seq
			if !acked[id] {
				// Stored by a call whose process was killed before it said
				// so, or enqueued again after a failure.
				p := procs[tag]
				require.NotNil(t, p)
				_, killed := p.killedOrRetried(seq)
				assert.True(t, killed, "service %d got %s, which was never acknowledged and whose producer was not killed", k, id)
				unacked++
			}
		}
		// A duplicate is a resend under the same transaction ID, or an
		// event enqueued twice because a failed call was made again.
		txnsOf := make(map[string]map[string]bool)
		for _, req := range successes(as) {
			txns++
			if req.Txn == nil {
				continue
			}
			for _, ev := range req.Txn.Events {
				if txnsOf[ev.ID] == nil {
					txnsOf[ev.ID] = make(map[string]bool)
				}
				txnsOf[ev.ID][req.TxnID] = true
				events++
			}
		}
		for id, ids := range txnsOf {
			n := as.Deliveries(id)
			if n < 2 {
				continue
			}
			if len(ids) == 1 {
				resent += n - 1
				continue
			}
			tag, seq, _ := parseChaosID(id)
			retried, _ := procs[tag].killedOrRetried(seq)
			assert.True(t, retried, "service %d got %s under %d transaction IDs, and it was enqueued once", k, id, len(ids))
			replayed += n - 1
		}
	}
	slices.Sort(r.fails)
	total := 0
	for _, w := range want {
		total += len(w)
	}
	t.Logf("%d kills, %d connection cuts, %d processes started; %d acknowledged deliveries owed, all arrived; "+
		"%d transactions and %d events delivered; duplicates: %d resent under the same txn ID, %d enqueued again after a failed call; "+
		"%d deliveries of events their killed producer had not acknowledged",
		r.kills, r.cuts, len(r.procs), total, txns, events, resent, replayed, unacked)
	if len(r.fails) > 0 {
		t.Logf("failover after kill -9 (lease %v): min %v, median %v, max %v", chaosLease,
			r.fails[0].Round(time.Millisecond), r.fails[len(r.fails)/2].Round(time.Millisecond), r.fails[len(r.fails)-1].Round(time.Millisecond))
	}
}

// killedOrRetried reports whether seq was in a call p made again after a
// failure, and whether p was killed (so its last call may have been
// stored without being acknowledged).
func (p *chaosProc) killedOrRetried(seq int) (retried, unackedOK bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rg := range p.retried {
		if seq >= rg[0] && seq <= rg[1] {
			retried = true
		}
	}
	return retried, p.killed || retried
}

// parseChaosID splits an event ID of chaosEventID.
func parseChaosID(id string) (tag string, seq int, ok bool) {
	rest, ok := strings.CutPrefix(id, "$c")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", 0, false
	}
	seq, err := strconv.Atoi(rest[i+1:])
	return rest[:i], seq, err == nil
}

// chaosRounds returns the number of rounds: ASDELIVER_PG_CHAOS_ROUNDS, or
// def.
func chaosRounds(t *testing.T, def int) int {
	if v := os.Getenv(chaosRoundsEnv); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, chaosRoundsEnv)
		return n
	}
	return def
}

// round kills, or every fifth round cuts the connections of, the process
// that sends to service k.
func (r *chaosRun) round(i int) {
	k := i % chaosServices
	var p *chaosProc
	waitFor(r.t, fmt.Sprintf("a live process to send to service %d", k), func() bool {
		p = r.sender(k)
		return p != nil
	})
	if i%5 == 4 {
		r.cut(p, k)
		return
	}
	r.kill(p, k)
}

// TestPostgresChaos: three processes, ASDELIVER_PG_CHAOS_ROUNDS rounds
// (25 by default: 20 kills) of kill -9 of the sender to a service, every
// fifth one a cut of its database connections instead.
func TestPostgresChaos(t *testing.T) {
	r := newChaosRun(t)
	rounds := chaosRounds(t, 25)
	for i := range rounds {
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		r.round(i)
	}
	r.finish()
	assert.Equal(t, rounds-rounds/5, r.kills)
}

// TestPostgresChaosRestart: the same with PostgreSQL restarted in the
// middle. It runs only when ASDELIVER_TEST_POSTGRES_RESTART holds the
// command that restarts the server (CI runs it alone, after the other
// packages' tests, which a restart would disturb).
func TestPostgresChaosRestart(t *testing.T) {
	restart := os.Getenv(chaosRestartEnv)
	if restart == "" {
		t.Skipf("%s is not set: set it to a shell command that restarts the PostgreSQL server of %s to run this test",
			chaosRestartEnv, pgtest.DSNEnv)
	}
	r := newChaosRun(t)
	for i := range 3 {
		time.Sleep(300 * time.Millisecond)
		r.round(i)
	}
	out, err := exec.Command("sh", "-c", restart).CombinedOutput()
	require.NoError(t, err, "%s: %s", restart, out)
	waitFor(t, "PostgreSQL to answer again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, r.dsn)
		if err != nil {
			return false
		}
		_ = conn.Close(ctx)
		return true
	})
	for i := 3; i < 6; i++ {
		time.Sleep(300 * time.Millisecond)
		r.round(i)
	}
	r.finish()
}
