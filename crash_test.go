//go:build unix

package scheduler_test

// The crash torture test: guarantee 1 (at-least-once) across kill -9.
//
// TestCrashTorture is the parent. It runs three application services on
// 127.0.0.1 (crash-a always up, crash-b flapping with random failures and
// occasional hangs, crash-c down for most of the run) that record every
// request, and re-executes the test binary as a child (TestCrashChild) that
// runs a Scheduler on a SQLite file and enqueues a deterministic stream of
// events, reporting on a pipe each Enqueue call as it begins and as it
// returns. The parent SIGKILLs the child at chosen moments — during Start,
// during an Enqueue commit, in the middle of a PUT, between the AS's answer
// and the Complete that records it, during the Recoverer's backoff, during
// Stop — and starts a new child on the same file that resumes the stream
// after the last acknowledged event, as a homeserver that advances its
// stream position only when Enqueue returns would (in a quarter of the
// restarts a few calls earlier: a homeserver may advance its position
// lazily). Events the dead child had committed without acknowledging them
// are thus enqueued again: the scheduler drops those still pending, and
// delivers again those already delivered. A last child runs to completion
// and stops cleanly.
//
// Then the parent checks, per service, against what was acknowledged: every
// event delivered, first deliveries in stream order, each txn ID with one
// body, IDs never going down nor a newer one sent while an older one is
// undelivered, and every duplicate explained — a transaction resent under
// its ID because its sender died between the AS's success and a durable
// Complete, or an event enqueued again after it was delivered.
//
// ASDELIVER_CRASH_ROUNDS=500 runs a long version (the default is 25 kills);
// ASDELIVER_CRASH_SEED replays the parent's random choices.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/sqlite"
)

const (
	// crashChildEnv holds the child's crashChildSpec as JSON; TestCrashChild
	// runs only when it is set.
	crashChildEnv = "ASDELIVER_CRASH_CHILD"
	// crashRoundsEnv sets how many kills the torture inflicts.
	crashRoundsEnv = "ASDELIVER_CRASH_ROUNDS"
	// crashSeedEnv fixes the parent's random choices, to replay a run.
	crashSeedEnv = "ASDELIVER_CRASH_SEED"
	// crashDefaultKills is the number of kills of the default run.
	crashDefaultKills = 25
	// crashEventsPerKill sizes the event stream to the run.
	crashEventsPerKill = 40
	// crashGenHeader carries the child's generation on every request it
	// sends, so the services know which process sent what.
	crashGenHeader = "X-Asdeliver-Crash-Generation"
	// crashMaxEvents is the children's Config.MaxEventsPerTxn: small, so
	// that a run has many transactions to interrupt.
	crashMaxEvents = 10
	// crashRoundLimit bounds a round whose trigger never comes.
	crashRoundLimit = time.Second
	// crashCleanExit is more than a child needs to exit after a clean Stop
	// (the race detector waits a second at exit: GORACE atexit_sleep_ms).
	crashCleanExit = 1500 * time.Millisecond

	crashServerName = "example.org"
	crashLetters    = "abc" // the services' letters, in index order
)

// The event stream. Event i is a pure function of i, so the parent knows
// every event and which services want it without being told.

// crashKind is one shape of event: the localpart prefix of its sender (the
// letters of the services whose users namespace it is in) and its room
// ("!all" is in the rooms namespace of all three services).
type crashKind struct {
	prefix string
	room   string
}

var crashKinds = []crashKind{
	{"a", "!plain"}, {"b", "!plain"}, {"c", "!plain"},
	{"ab", "!plain"}, {"bc", "!plain"}, {"ac", "!plain"},
	{"z", "!all"},   // for all three, by room
	{"z", "!plain"}, // for nobody: never stored
}

// crashMix is splitmix64's mixing step: a cheap, well-spread hash.
func crashMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func crashKindOf(i int) crashKind {
	return crashKinds[crashMix(uint64(i))%uint64(len(crashKinds))]
}

// crashWants reports whether service k wants event i, decided from how the
// stream is built, independently of the scheduler's matcher.
func crashWants(i, k int) bool {
	kind := crashKindOf(i)
	return kind.room == "!all" || strings.IndexByte(kind.prefix, crashLetters[k]) >= 0
}

func crashEventID(i int) string { return fmt.Sprintf("$crash-%d:%s", i, crashServerName) }

// crashEventIndex is the inverse of crashEventID.
func crashEventIndex(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "$crash-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ":"+crashServerName)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 0
}

// crashEventRaw is the exact JSON of event i, of varying length.
func crashEventRaw(i int) []byte {
	kind := crashKindOf(i)
	h := crashMix(uint64(i) ^ 0x5eed)
	return fmt.Appendf(nil, `{"content":{"body":"event %d %s","msgtype":"m.text"},"event_id":%q,`+
		`"origin_server_ts":%d,"room_id":"%s:%s","sender":"@%s_u%d:%s","type":"m.room.message"}`,
		i, strings.Repeat("~", int(h%240)), crashEventID(i),
		1700000000000+i, kind.room, crashServerName, kind.prefix, h%7, crashServerName)
}

// crashRegistrations are the three services' registration files, the same
// for every child but for the URLs the parent's servers listen on.
func crashRegistrations(urls [3]string) ([]*scheduler.Registration, error) {
	regs := make([]*scheduler.Registration, len(urls))
	for k, url := range urls {
		doc := fmt.Sprintf(`id: crash-%[1]c
url: %[2]q
as_token: as-crash-%[1]c
hs_token: hs-crash-%[1]c
sender_localpart: crash_%[1]c
namespaces:
  users:
    - exclusive: false
      regex: '@[abc]*%[1]c[abc]*_'
  rooms:
    - exclusive: false
      regex: '!all:'
`, crashLetters[k], url)
		r, err := scheduler.ParseRegistration([]byte(doc))
		if err != nil {
			return nil, err
		}
		regs[k] = r
	}
	return regs, nil
}

// The child.

// crashChildSpec tells a child what to do.
type crashChildSpec struct {
	DB   string    `json:"db"`   // the SQLite file
	URLs [3]string `json:"urls"` // the services' URLs
	Gen  int       `json:"gen"`  // this child's generation, from 1
	From int       `json:"from"` // the first event index to enqueue
	To   int       `json:"to"`   // the index after the last one
	Seed uint64    `json:"seed"` // for batch sizes and pacing
}

// TestCrashChild is the child process of TestCrashTorture; on its own it
// skips. It reports on file descriptor 3, one line per write:
//
//	S        the scheduler has started
//	E i j    an Enqueue of events [i, j) begins
//	A j      that Enqueue returned: events before j are accepted
//	D        every event of the spec is accepted
//	Q        after D: the store holds nothing pending
//
// It stops the scheduler when its standard input ends, and exits 0 if
// that stop was clean.
func TestCrashChild(t *testing.T) {
	var spec crashChildSpec
	scheduler.ChildSpec(t, crashChildEnv, "TestCrashTorture", &spec)
	report := os.NewFile(3, "crash-report")
	require.NotNil(t, report)
	defer report.Close()
	say := func(format string, args ...any) {
		// One write per line: the parent ignores a line cut by the kill.
		_, err := fmt.Fprintf(report, format+"\n", args...)
		require.NoError(t, err)
	}

	ctx := context.Background()
	st, err := sqlite.Open(spec.DB)
	require.NoError(t, err)
	regs, err := crashRegistrations(spec.URLs)
	require.NoError(t, err)
	transport := &http.Transport{MaxIdleConnsPerHost: 4}
	s, err := scheduler.New(scheduler.Config{
		ServerName:      crashServerName,
		Services:        regs,
		Store:           st,
		PollInterval:    50 * time.Millisecond,
		RetryInitial:    10 * time.Millisecond,
		RetryMax:        100 * time.Millisecond,
		MaxEventsPerTxn: crashMaxEvents,
		AnswerTimeout:   10 * time.Second,
		HTTPClient: &http.Client{Transport: scheduler.TagTransport{
			Header: crashGenHeader, Value: strconv.Itoa(spec.Gen), Base: transport,
		}},
	})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	say("S")

	stopped := make(chan error, 1)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stopped <- s.Stop(sctx)
	}()

	events := make([]scheduler.Event, 0, 8)
	rng := rand.New(rand.NewPCG(spec.Seed, uint64(spec.Gen)))
	complete := true
	for i := spec.From; i < spec.To; {
		j := min(spec.To, i+1+rng.IntN(6))
		events = events[:0]
		for n := i; n < j; n++ {
			ev, err := scheduler.ParseEvent(crashEventRaw(n))
			require.NoError(t, err)
			events = append(events, ev)
		}
		say("E %d %d", i, j)
		err := s.Enqueue(ctx, events...)
		if errors.Is(err, scheduler.ErrStopped) {
			complete = false
			break
		}
		require.NoError(t, err)
		say("A %d", j)
		i = j
		if rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
	}
	if complete {
		say("D")
	}

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	quiet := !complete // report Q only after D
	var stopErr error
wait:
	for {
		select {
		case stopErr = <-stopped:
			break wait
		case <-tick.C:
		}
		if !quiet {
			backlogs, err := st.Backlogs(ctx)
			require.NoError(t, err)
			if len(backlogs) == 0 {
				say("Q")
				quiet = true
			}
		}
	}
	require.NoError(t, stopErr, "Stop")
	transport.CloseIdleConnections()
	require.NoError(t, st.Close())
}

// The services.

// crashRequest is one request a service received, as the checks read it.
type crashRequest struct {
	Seq    int64 // arrival order at the service
	Gen    int   // the generation of the child that sent it
	TxnID  int64
	Body   []byte
	Whole  bool      // the body arrived complete
	Status int       // the answer; 0 when none was given (the sender had died)
	Done   time.Time // when the service recorded it, before answering
}

// crashWhen says at which point of a request a kill hook fires.
type crashWhen int

const (
	// crashBeforeAnswer: the request arrived; kill the child, then drop the
	// request unanswered (the AS never processed it).
	crashBeforeAnswer crashWhen = iota
	// crashAfterAccept: the AS accepts the transaction; kill the child
	// before it reads the answer.
	crashAfterAccept
	// crashAfterAnswer: kill shortly after the success answer is sent,
	// racing the Complete that records it.
	crashAfterAnswer
	// crashAfterFailure: kill shortly after a failure answer, while the
	// Recoverer waits or retries.
	crashAfterFailure
)

// crashHook makes a service trigger a kill on a request of one generation.
type crashHook struct {
	gen   int
	when  crashWhen
	fired chan struct{}   // closed when the hook fires
	dead  <-chan struct{} // closed once the child is dead
}

// crashAS is one application service: an astest server that records
// every request (and checks that a txn ID always carries the same body),
// answering as the service's policy and the kill hook armed on it say.
type crashAS struct {
	*astest.Server
	t      *testing.T
	k      int
	up     atomic.Bool // crash-c: answers 200 once up
	policy func() (status int, hang time.Duration)

	mu   sync.Mutex
	hook *crashHook
}

func newCrashAS(t *testing.T, k int, rng *rand.Rand) *crashAS {
	as := &crashAS{Server: astest.New(t, "hs-crash-"+string(crashLetters[k])), t: t, k: k}
	switch k {
	case 0:
		as.policy = func() (int, time.Duration) { return http.StatusOK, 0 }
	case 1:
		var mu sync.Mutex
		as.policy = func() (int, time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			switch x := rng.IntN(100); {
			case x < 20:
				return []int{500, 502, 503, 429}[x%4], 0
			case x < 26:
				status := http.StatusOK
				if x%2 == 0 {
					status = http.StatusBadGateway
				}
				return status, time.Duration(20+rng.IntN(230)) * time.Millisecond
			}
			return http.StatusOK, 0
		}
	default:
		as.policy = func() (int, time.Duration) {
			if as.up.Load() {
				return http.StatusOK, 0
			}
			return http.StatusServiceUnavailable, 0
		}
	}
	as.Respond(as.answer)
	return as
}

func (as *crashAS) name() string { return "crash-" + string(crashLetters[as.k]) }

// arm installs a kill hook for the next fitting request of generation gen.
func (as *crashAS) arm(h *crashHook) {
	as.mu.Lock()
	as.hook = h
	as.mu.Unlock()
}

func (as *crashAS) disarm() { as.arm(nil) }

// takeHook returns the armed hook if it fits a request of gen that is
// answered with status after hang, and disarms it.
func (as *crashAS) takeHook(gen, status int, hang time.Duration) *crashHook {
	as.mu.Lock()
	defer as.mu.Unlock()
	h := as.hook
	if h == nil || h.gen != gen {
		return nil
	}
	ok := status == http.StatusOK
	switch h.when {
	case crashAfterAccept, crashAfterAnswer:
		if !ok || hang > 0 {
			return nil
		}
	case crashAfterFailure:
		if ok || hang > 0 {
			return nil
		}
	}
	as.hook = nil
	return h
}

// answer decides the answer to a request: the service's policy, and the
// armed hook if the request fits it.
func (as *crashAS) answer(r astest.Request) astest.Answer {
	gen, _ := strconv.Atoi(r.Header.Get(crashGenHeader))
	status, hang := as.policy()
	a := astest.Answer{Status: status, Delay: hang}
	hook := as.takeHook(gen, status, hang)
	switch {
	case hook == nil:
	case hook.when == crashBeforeAnswer:
		close(hook.fired)
		return astest.Answer{Hold: hook.dead, Drop: true} // the AS never processed it
	case hook.when == crashAfterAccept:
		a.Recorded = func() {
			close(hook.fired)
			<-hook.dead
		}
	default: // crashAfterAnswer, crashAfterFailure
		a.Answered = func() { close(hook.fired) }
	}
	return a
}

// requests returns what the service received, in the order its senders
// sent it: by generation, then by arrival. A child sends one request at a
// time per service, so within a generation arrival order is send order; a
// request of a dead child may be read after its successor started.
func (as *crashAS) requests() []crashRequest {
	var reqs []crashRequest
	for _, r := range as.Requests() {
		gen, _ := strconv.Atoi(r.Header.Get(crashGenHeader))
		txnID, err := strconv.ParseInt(r.TxnID, 10, 64)
		if r.Method != http.MethodPut || err != nil || gen < 1 || r.Auth != "Bearer "+as.HSToken() {
			as.t.Errorf("%s: unexpected request %s %s (generation %q)", as.name(), r.Method, r.Path, r.Header.Get(crashGenHeader))
			continue
		}
		reqs = append(reqs, crashRequest{Seq: int64(r.N), Gen: gen, TxnID: txnID, Body: r.Body,
			Whole: !r.Truncated, Status: r.Status, Done: r.Done})
	}
	slices.SortFunc(reqs, func(a, b crashRequest) int {
		if a.Gen != b.Gen {
			return a.Gen - b.Gen
		}
		return int(a.Seq - b.Seq)
	})
	return reqs
}

// The parent.

// crashProc is one child process.
type crashProc struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	out      bytes.Buffer  // its stdout and stderr, complete once exited is closed
	exited   chan struct{} // closed when Wait returned
	read     chan struct{} // closed when the report pipe is drained
	notify   chan struct{} // capacity 1: new report lines
	waitErr  error
	sentKill bool

	mu    sync.Mutex
	lines []string // complete report lines not yet taken
}

// take returns the report lines that arrived since the last call.
func (p *crashProc) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.lines
	p.lines = nil
	return lines
}

func (p *crashProc) kill() {
	if !p.sentKill {
		p.sentKill = true
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// reap waits for the process and its report pipe.
func (p *crashProc) reap() {
	<-p.exited
	<-p.read
}

// killedBySignal reports whether the process died of the SIGKILL we sent.
func (p *crashProc) killedBySignal() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return p.sentKill && ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// crashGen is what the parent learnt of one generation.
type crashGen struct {
	gen      int
	from, to int
	mode     string
	calls    []crashCall // Enqueue calls begun, in order
	acked    int         // index after the last accepted event; from if none
	started  bool        // S
	quiet    bool        // Q
	killed   bool
	clean    bool // exited 0 on its own (a Stop that won the race)
	fallback bool // killed because its trigger did not come in time

	spawned   time.Time
	startedIn time.Duration // from spawn to S
}

// crashCall is one Enqueue call of a child.
type crashCall struct {
	from, to int
	begun    time.Time // when the parent read its E line
	// done bounds the end of its commit: when the parent read its A line,
	// or saw the child dead.
	done  time.Time
	acked bool
}

func (c crashCall) String() string {
	if c.acked {
		return fmt.Sprintf("[%d,%d)", c.from, c.to)
	}
	return fmt.Sprintf("[%d,%d)?", c.from, c.to)
}

// apply reads one report line.
func (g *crashGen) apply(t *testing.T, line string) (kind byte) {
	f := strings.Fields(line)
	bad := func() byte {
		t.Errorf("generation %d: bad report line %q", g.gen, line)
		return 0
	}
	if len(f) == 0 || len(f[0]) != 1 {
		return bad()
	}
	switch f[0] {
	case "S":
		g.started = true
		g.startedIn = time.Since(g.spawned)
	case "E":
		if len(f) != 3 {
			return bad()
		}
		i, err1 := strconv.Atoi(f[1])
		j, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || i != g.acked || j <= i || j > g.to {
			return bad()
		}
		g.calls = append(g.calls, crashCall{from: i, to: j, begun: time.Now()})
	case "A":
		if len(f) != 2 {
			return bad()
		}
		j, err := strconv.Atoi(f[1])
		if err != nil || len(g.calls) == 0 || g.calls[len(g.calls)-1].to != j {
			return bad()
		}
		c := &g.calls[len(g.calls)-1]
		c.done, c.acked = time.Now(), true
		g.acked = j
	case "D":
	case "Q":
		g.quiet = true
	default:
		return bad()
	}
	return f[0][0]
}

// ended reads the last report lines of a dead child. An Enqueue call it
// did not acknowledge ended, if at all, before now.
func (g *crashGen) ended(t *testing.T, p *crashProc) {
	for _, line := range p.take() {
		g.apply(t, line)
	}
	now := time.Now()
	for i := range g.calls {
		if !g.calls[i].acked {
			g.calls[i].done = now
		}
	}
}

// crashHarness runs the torture.
type crashHarness struct {
	t     *testing.T
	db    string
	seed  uint64
	total int
	as    [3]*crashAS
	gens  []*crashGen
}

// spawn starts a child for spec.
func (h *crashHarness) spawn(spec crashChildSpec) *crashProc {
	t := h.t
	r, w, err := os.Pipe()
	require.NoError(t, err)
	cmd := scheduler.ChildCmd(t, "TestCrashChild", crashChildEnv, 10*time.Minute, spec)
	cmd.ExtraFiles = []*os.File{w}
	p := &crashProc{
		cmd:    cmd,
		exited: make(chan struct{}),
		read:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
	cmd.Stdout = &p.out
	cmd.Stderr = &p.out
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	if err := cmd.Start(); err != nil {
		_ = r.Close()
		_ = w.Close()
		t.Fatalf("starting child: %v", err)
	}
	_ = w.Close() // the child holds the only write end: its death ends the pipe
	t.Cleanup(func() {
		p.kill()
		p.reap()
	})
	go func() {
		defer close(p.read)
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return // at the end; a last line cut by the kill is ignored
			}
			p.mu.Lock()
			p.lines = append(p.lines, strings.TrimSuffix(line, "\n"))
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p
}

// checkOutput fails the test if a child reported a race, a panic or a
// failure, whether or not it was killed.
func (h *crashHarness) checkOutput(g *crashGen, p *crashProc) {
	out := p.out.String()
	for _, bad := range []string{"DATA RACE", "panic:", "--- FAIL", "found unexpected goroutines"} {
		if strings.Contains(out, bad) {
			h.t.Fatalf("child of generation %d (%s) reported %q:\n%s", g.gen, g.mode, bad, out)
		}
	}
}

var crashModes = []string{
	"startup",           // opening the store, Start: before S
	"timer",             // a random moment after Start
	"after-start",       // just after Start: restart recovery under way
	"enqueue-begun",     // an Enqueue call is committing
	"enqueue-acked",     // an Enqueue call just returned
	"put-before-answer", // a PUT arrived; the AS never processed it
	"put-accepted",      // the AS accepted; the child never saw the answer
	"put-answered",      // racing the Complete of a delivered transaction
	"recovery",          // after a failure: the Recoverer's backoff
	"stop",              // during Stop
}

// round runs one generation to its kill and returns what happened.
func (h *crashHarness) round(gen, from, to int, mode string, rng *rand.Rand) *crashGen {
	t := h.t
	g := &crashGen{gen: gen, from: from, to: to, acked: from, mode: mode, spawned: time.Now()}
	h.gens = append(h.gens, g)
	p := h.spawn(h.spec(gen, from, to))

	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	var (
		killAt   <-chan time.Time
		stopAt   <-chan time.Time
		fired    <-chan struct{}
		delay    time.Duration // from the trigger to the kill
		onLine   byte          // trigger on the n-th report line of this kind
		lineN    int
		hookedAS *crashAS
	)
	schedule := func(d time.Duration) {
		if killAt == nil && !p.sentKill {
			killAt = time.After(d)
		}
	}
	hook := func(as *crashAS, when crashWhen) {
		c := make(chan struct{})
		as.arm(&crashHook{gen: gen, when: when, fired: c, dead: p.exited})
		fired, hookedAS = c, as
	}
	// A service that will receive requests: crash-c only while down
	// (retries) or up (catch-up), crash-a and crash-b when events flow.
	anyAS := func() *crashAS { return h.as[rng.IntN(3)] }
	okAS := func() *crashAS { // one that may accept a transaction
		if h.as[2].up.Load() {
			return anyAS()
		}
		return h.as[rng.IntN(2)]
	}
	switch mode {
	case "startup":
		schedule(ms(0, 100))
	case "timer":
		onLine, lineN, delay = 'S', 1, ms(10, 400)
	case "after-start":
		onLine, lineN, delay = 'S', 1, ms(0, 30)
	case "enqueue-begun":
		// An Enqueue commit takes a few milliseconds (an fsync): the kill
		// lands before, during or just after it.
		onLine, lineN, delay = 'E', 1+rng.IntN(25), time.Duration(rng.IntN(12000))*time.Microsecond
	case "enqueue-acked":
		onLine, lineN = 'A', 1+rng.IntN(25)
	case "put-before-answer":
		hook(anyAS(), crashBeforeAnswer)
	case "put-accepted":
		hook(okAS(), crashAfterAccept)
	case "put-answered":
		hook(okAS(), crashAfterAnswer)
		delay = time.Duration(rng.IntN(3000)) * time.Microsecond
	case "recovery":
		hook(h.as[1+rng.IntN(2)], crashAfterFailure)
		delay = ms(0, 30)
	case "stop":
		stopAt = time.After(ms(20, 200))
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	if mode == "recovery" && hookedAS.k == 2 && hookedAS.up.Load() {
		hookedAS.disarm() // crash-c fails nothing once up: fall back on a timer
		fired = nil
		onLine, lineN, delay = 'S', 1, ms(10, 400)
	}
	roundLimit := crashRoundLimit
	if mode == "stop" {
		roundLimit += crashCleanExit
	}
	limit := time.NewTimer(roundLimit)
	defer limit.Stop()
	seen := map[byte]int{}
loop:
	for {
		select {
		case <-p.notify:
			for _, line := range p.take() {
				kind := g.apply(t, line)
				seen[kind]++
				// A child that reaches the end of its events before the
				// n-th line is killed then.
				if onLine != 0 && (kind == onLine && seen[kind] == lineN || kind == 'D') {
					schedule(delay)
				}
			}
		case <-fired:
			fired = nil
			schedule(delay)
		case <-stopAt:
			stopAt = nil
			_ = p.stdin.Close() // the child calls Stop
			if rng.IntN(4) == 0 {
				schedule(crashCleanExit) // usually late: a clean exit, then a restart
			} else {
				schedule(ms(0, 15)) // usually while Stop runs
			}
		case <-killAt:
			killAt = nil
			p.kill()
		case <-limit.C:
			g.fallback = true
			p.kill()
		case <-p.exited:
			break loop
		}
	}
	p.reap()
	g.ended(t, p)
	for _, as := range h.as {
		as.disarm()
	}
	h.checkOutput(g, p)
	g.killed = p.killedBySignal()
	g.clean = p.cmd.ProcessState.Success()
	if !g.killed && !(g.clean && mode == "stop") {
		t.Fatalf("child of generation %d (%s) ended on its own: %v\n%s", gen, mode, p.waitErr, p.out.String())
	}
	return g
}

func (h *crashHarness) spec(gen, from, to int) crashChildSpec {
	spec := crashChildSpec{DB: h.db, Gen: gen, From: from, To: to, Seed: h.seed}
	for k, as := range h.as {
		spec.URLs[k] = as.URL()
	}
	return spec
}

// final runs the last child to completion: every event accepted, every
// service owed nothing, then a clean Stop.
func (h *crashHarness) final(gen, from int, limit time.Duration) *crashGen {
	t := h.t
	g := &crashGen{gen: gen, from: from, to: h.total, acked: from, mode: "final", spawned: time.Now()}
	h.gens = append(h.gens, g)
	h.as[2].up.Store(true)
	p := h.spawn(h.spec(gen, from, h.total))
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for !g.quiet {
		select {
		case <-p.notify:
			for _, line := range p.take() {
				g.apply(t, line)
			}
		case <-p.exited:
			p.reap()
			t.Fatalf("the final child ended before delivering everything: %v\n%s", p.waitErr, p.out.String())
		case <-deadline.C:
			p.kill()
			p.reap()
			t.Fatalf("the final child did not deliver everything within %v; its output:\n%s", limit, p.out.String())
		}
	}
	_ = p.stdin.Close()
	stopping := time.Now()
	defer func() {
		t.Logf("the final child stopped and exited in %v", time.Since(stopping).Round(time.Millisecond))
	}()
	select {
	case <-p.exited:
	case <-deadline.C:
		p.kill()
	}
	p.reap()
	g.ended(t, p)
	h.checkOutput(g, p)
	require.NoError(t, p.waitErr, "the final child must stop cleanly and exit 0; its output:\n%s", p.out.String())
	g.clean = true
	require.Equal(t, h.total, g.acked, "the final child accepted the whole stream")
	return g
}

// TestCrashTorture proves guarantee 1 with real crashes; see the comment at
// the top of this file. ASDELIVER_CRASH_ROUNDS sets the number of kills
// (default 25), ASDELIVER_CRASH_SEED the random choices.
func TestCrashTorture(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child process")
	}
	began := time.Now()
	kills := crashDefaultKills
	if v := os.Getenv(crashRoundsEnv); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, crashRoundsEnv)
		require.Positive(t, n, crashRoundsEnv)
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeedEnv); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, crashSeedEnv)
	}
	t.Logf("%s=%d %s=%d", crashRoundsEnv, kills, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	h := &crashHarness{
		t:     t,
		db:    filepath.Join(t.TempDir(), "asdeliver.db"),
		seed:  seed,
		total: kills * crashEventsPerKill,
	}
	for k := range h.as {
		h.as[k] = newCrashAS(t, k, rand.New(rand.NewPCG(seed, uint64(10+k))))
	}

	from, killed, clean, lagged := 0, 0, 0, 0
	modes, fallbacks := map[string]int{}, map[string]int{}
	gen := 1
	for ; killed < kills; gen++ {
		// crash-c is down for most of the run, and catches up under the
		// last fifth of the kills.
		if killed >= kills*4/5 {
			h.as[2].up.Store(true)
		}
		to := min(h.total, from+20+rng.IntN(81))
		mode := crashModes[rng.IntN(len(crashModes))]
		g := h.round(gen, from, to, mode, rng)
		from = g.acked
		switch {
		case g.killed:
			killed++
			modes[mode]++
		case g.clean:
			clean++
		}
		if g.fallback {
			fallbacks[mode]++
		}
		// Now and then the homeserver's stream position lags behind what
		// Enqueue accepted (it may advance it lazily): the next child
		// replays some accepted events too, pending or already delivered.
		if n := len(g.calls); n > 1 && rng.IntN(4) == 0 {
			from = g.calls[max(0, n-1-rng.IntN(5))].from
			lagged++
		}
	}
	fin := h.final(gen, from, time.Minute+time.Duration(h.total)*5*time.Millisecond)

	// Nothing is left in the store.
	st, err := sqlite.Open(h.db)
	require.NoError(t, err)
	backlogs, err := st.Backlogs(context.Background())
	require.NoError(t, err)
	require.NoError(t, st.Close())
	require.Empty(t, backlogs, "the store holds nothing after the final child")

	// The Enqueue calls that began with each event, by when their commit
	// had ended at the latest: each may queue the event once more for a
	// service that no longer had it pending at that moment.
	attempts := make([][]time.Time, h.total)
	accepted, replayed := 0, 0
	var starts, commits []time.Duration
	for _, g := range h.gens {
		for _, c := range g.calls {
			for i := c.from; i < c.to; i++ {
				attempts[i] = append(attempts[i], c.done)
			}
			if c.acked {
				accepted += c.to - c.from
				commits = append(commits, c.done.Sub(c.begun))
			}
		}
		if g.started {
			starts = append(starts, g.startedIn)
		}
	}
	for _, a := range attempts {
		slices.SortFunc(a, time.Time.Compare)
		if len(a) > 1 {
			replayed++
		}
	}
	slices.Sort(starts)
	slices.Sort(commits)

	t.Logf("%d generations: %d killed by SIGKILL, %d stopped cleanly before the kill, 1 final clean run (generation %d, from event %d); %d restarts with a lagging stream position",
		len(h.gens), killed, clean, fin.gen, fin.from, lagged)
	t.Logf("kills after a fallback timeout (trigger did not come within %v): %v", crashRoundLimit, fallbacks)
	t.Logf("kills by moment: %v", modes)
	t.Logf("events: %d in the stream, %d acceptances reported (with replays), %d events enqueued again by a later generation",
		h.total, accepted, replayed)
	t.Logf("child start-up (exec to Start returned): median %v; Enqueue call as the parent saw it: median %v, max %v",
		starts[len(starts)/2].Round(time.Millisecond), commits[len(commits)/2].Round(100*time.Microsecond),
		commits[len(commits)-1].Round(100*time.Microsecond))
	var sum crashFigures
	for _, as := range h.as {
		f := h.check(as, attempts)
		sum.puts += f.puts
		sum.txns += f.txns
		sum.resent += f.resent
		sum.replayed += f.replayed
	}
	t.Logf("in all: %d kills, %d events accepted, %d PUTs, %d transactions delivered, duplicate deliveries: %d resent under the same txn ID + %d replayed under a new one; wall time %v",
		killed, h.total, sum.puts, sum.txns, sum.resent, sum.replayed, time.Since(began).Round(time.Millisecond))
	if t.Failed() {
		for _, g := range h.gens {
			t.Logf("generation %d: %s [%d,%d) acked %d, calls %v (? unacknowledged), killed %v clean %v fallback %v",
				g.gen, g.mode, g.from, g.to, g.acked, g.calls, g.killed, g.clean, g.fallback)
		}
	}
}

// crashDelivery is one successful delivery of an event.
type crashDelivery struct {
	txn int64
	gen int
	seq int64     // the request's Seq
	at  time.Time // when the service recorded it
}

// check asserts guarantees 1 to 3 for one service from what it received,
// and logs its figures. That a txn ID always carries the same body, the
// service's astest server checks as the requests arrive.
func (h *crashHarness) check(as *crashAS, attempts [][]time.Time) crashFigures {
	t := h.t
	name := as.name()
	reqs := as.requests()
	errs := 0
	fail := func(format string, args ...any) {
		errs++
		if errs <= 20 {
			t.Errorf(name+": "+format, args...)
		}
	}

	// The last request each generation sent to this service.
	lastOfGen := map[int]int64{}
	for _, r := range reqs {
		lastOfGen[r.Gen] = max(lastOfGen[r.Gen], r.Seq)
	}

	var (
		deliveries = map[int][]crashDelivery{} // event → its deliveries, in send order
		firsts     []int                       // events in order of first delivery
		pending    = map[int64]bool{}          // txn IDs whose last attempt failed
		maxOK      int64                       // highest txn ID delivered so far
		delivered  = map[int64]int{}           // txn ID → successful deliveries
		failed     int
		unanswered int
		sizes      int
	)
	for _, r := range reqs {
		// Guarantee 2: never a newer transaction while an older one is
		// undelivered, never an older one after a newer was delivered.
		if r.TxnID < maxOK {
			fail("txn %d sent (generation %d) after txn %d was delivered", r.TxnID, r.Gen, maxOK)
		}
		for id := range pending {
			if id < r.TxnID {
				fail("txn %d sent (generation %d) while txn %d was undelivered", r.TxnID, r.Gen, id)
			}
		}
		switch {
		case r.Status == 0:
			unanswered++
		case r.Status != http.StatusOK:
			failed++
		}
		if !r.Whole {
			pending[r.TxnID] = true
			continue
		}
		if r.Status != http.StatusOK {
			pending[r.TxnID] = true
			continue
		}
		delete(pending, r.TxnID)
		maxOK = max(maxOK, r.TxnID)
		delivered[r.TxnID]++

		var body struct {
			Events *[]json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil || body.Events == nil {
			fail("txn %d: body without an events array (%v): %s", r.TxnID, err, r.Body)
			continue
		}
		if n := len(*body.Events); n == 0 || n > crashMaxEvents {
			fail("txn %d carries %d events, want 1 to %d", r.TxnID, n, crashMaxEvents)
		}
		sizes += len(*body.Events)
		inTxn := map[int]bool{}
		for _, raw := range *body.Events {
			var ev struct {
				ID string `json:"event_id"`
			}
			_ = json.Unmarshal(raw, &ev)
			i, ok := crashEventIndex(ev.ID)
			switch {
			case !ok || i >= h.total:
				fail("txn %d carries an event not in the stream: %s", r.TxnID, raw)
				continue
			case !bytes.Equal(raw, crashEventRaw(i)):
				fail("txn %d carries event %d altered: %s, want %s", r.TxnID, i, raw, crashEventRaw(i))
			case !crashWants(i, as.k):
				fail("txn %d carries event %d, which the service does not want", r.TxnID, i)
			case inTxn[i]:
				fail("txn %d carries event %d twice", r.TxnID, i)
			}
			inTxn[i] = true
			if len(deliveries[i]) == 0 {
				firsts = append(firsts, i)
			}
			deliveries[i] = append(deliveries[i], crashDelivery{txn: r.TxnID, gen: r.Gen, seq: r.Seq, at: r.Done})
		}
	}
	for id := range pending {
		fail("txn %d was never delivered", id)
	}

	// Guarantee 1: every accepted event the service wants, delivered.
	owed := 0
	for i := range h.total {
		if !crashWants(i, as.k) {
			continue
		}
		owed++
		if len(deliveries[i]) == 0 {
			fail("event %d (accepted, wanted) never delivered", i)
		}
	}
	// Guarantee 2: first deliveries in enqueue order.
	for n := 1; n < len(firsts); n++ {
		if firsts[n] <= firsts[n-1] {
			fail("event %d first delivered after event %d", firsts[n], firsts[n-1])
		}
	}

	// Duplicates, by cause.
	//   resent: a transaction delivered, then sent again under the same ID
	//     by a later generation: its sender died between the AS's success
	//     and a durable Complete, so that success was the last request
	//     that generation sent here.
	//   replayed: a new transaction carrying an event again, because a
	//     later generation enqueued it again once it was no longer pending:
	//     each copy after the first needs an Enqueue call of its own that
	//     committed after the previous copy was delivered.
	var resent, replayed, resentTxns int
	for i, ds := range deliveries {
		last := map[int64]crashDelivery{} // txn → its latest delivery
		var copies []crashDelivery        // first delivery of each txn
		for n, d := range ds {
			prev, again := last[d.txn]
			last[d.txn] = d
			switch {
			case n == 0:
				copies = append(copies, d)
			case again:
				resent++
				if prev.gen >= d.gen || lastOfGen[prev.gen] != prev.seq {
					fail("event %d: txn %d delivered again (generation %d after %d) without a kill between its success and its Complete",
						i, d.txn, d.gen, prev.gen)
				}
			default:
				replayed++
				copies = append(copies, d)
			}
		}
		if len(copies) > len(attempts[i]) {
			fail("event %d delivered in %d transactions but enqueued %d times", i, len(copies), len(attempts[i]))
			continue
		}
		for n := 1; n < len(copies); n++ {
			// Copies n and later each need a distinct call that ended
			// after copy n-1 was delivered.
			after := len(attempts[i]) - sort.Search(len(attempts[i]), func(j int) bool {
				return attempts[i][j].After(copies[n-1].at)
			})
			if need := len(copies) - n; after < need {
				fail("event %d delivered again in txn %d although no Enqueue call carrying it committed after txn %d delivered it",
					i, copies[n].txn, copies[n-1].txn)
				break
			}
		}
	}
	for _, n := range delivered {
		if n > 1 {
			resentTxns += n - 1
		}
	}
	if errs > 20 {
		t.Errorf("%s: %d more failures", name, errs-20)
	}
	t.Logf("%s: %d PUTs (%d failed, %d unanswered: in flight at a kill), %d transactions delivered (%d events, %d a second time), %d events owed, all delivered: %v",
		name, len(reqs), failed, unanswered, len(delivered), sizes, resentTxns, owed, errs == 0)
	t.Logf("%s: duplicate deliveries: %d resent under the same txn ID (killed between success and Complete), %d replayed under a new txn ID (enqueued again after it was delivered: not acknowledged before a kill, or a lagging stream position)",
		name, resent, replayed)
	return crashFigures{puts: len(reqs), txns: len(delivered), resent: resent, replayed: replayed}
}

// crashFigures are one service's counts.
type crashFigures struct {
	puts, txns, resent, replayed int
}
