package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store/postgres"
)

// processHeader tells the demo's application services which process sent
// a transaction: the demo kills the one that sends to the victim.
const processHeader = "X-Asdeliver-Demo-Process"

// childLeaseTTL is the lease of the demo's processes: failover after a
// kill -9 takes about this long plus the store's poll (1 s).
const childLeaseTTL = 3 * time.Second

// childSpec is what a scheduler process of the demo is told.
type childSpec struct {
	N, Of  int               // it is process N of Of, from 0
	Total  int               // events of all processes; it sends those i with i%Of == N
	Schema string            // the PostgreSQL schema they share
	URLs   map[string]string // service ID → URL of its application service
}

// tagTransport marks every request with the number of its process.
type tagTransport struct {
	n    int
	base http.RoundTripper
}

func (t tagTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(processHeader, strconv.Itoa(t.n))
	return t.base.RoundTrip(r)
}

// runChild is one scheduler process of the processes scenario: it enqueues
// its share of the events, printing "acked I" once every event of its
// share up to I is durable, then "produced", and delivers (when it holds
// a service's lease) until its standard input closes.
func runChild(raw string, o options) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return fmt.Errorf("-child: %w", err)
	}
	ctx := context.Background()
	st, err := postgres.OpenWithOptions(ctx, o.postgres, postgres.Options{Schema: spec.Schema})
	if err != nil {
		return err
	}
	defer st.Close()
	var regs []*scheduler.Registration
	for _, b := range newBridges() {
		reg, err := b.registration(spec.URLs[b.name()])
		if err != nil {
			return err
		}
		regs = append(regs, reg)
	}
	client := &http.Client{Transport: tagTransport{spec.N, http.DefaultTransport.(*http.Transport).Clone()}}
	s, err := scheduler.New(scheduler.Config{
		ServerName: serverName, Services: regs, Store: st, Logger: logger(o.verbose),
		HTTPClient: client, LeaseTTL: childLeaseTTL, RetryInitial: 200 * time.Millisecond, RetryMax: time.Second,
	})
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	rng := mrand.New(mrand.NewPCG(uint64(spec.N), 11))
	var share []int
	for i := spec.N; i < spec.Total; i += spec.Of {
		share = append(share, i)
	}
	for len(share) > 0 {
		n := min(1+rng.IntN(50), len(share))
		events := make([]scheduler.Event, 0, n)
		for _, i := range share[:n] {
			ev, err := demoEvent(i)
			if err != nil {
				return err
			}
			events = append(events, ev)
		}
		if err := s.Enqueue(ctx, events...); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		fmt.Printf("acked %d\n", share[n-1])
		share = share[n:]
		time.Sleep(6 * time.Millisecond) // ~3 calls a process every 20 ms: a few seconds in all
	}
	fmt.Println("produced")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the demo is done
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.Stop(stopCtx)
}

// child is a scheduler process of the scenario, seen from the demo.
type child struct {
	n     int
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu       sync.Mutex
	acked    int // the last event of its share that is durable; -1 for none
	produced bool
	killed   bool
	done     chan struct{} // closed when its output ends
}

// lastAcked returns the last acknowledged event of the child's share.
func (c *child) lastAcked() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked, c.produced
}

// spawn starts process n of the scenario.
func spawn(o options, spec childSpec) (*child, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	args := []string{"-postgres", o.postgres, "-child", string(raw)}
	if o.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{n: spec.N, cmd: cmd, stdin: stdin, acked: -1, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			if rest, ok := strings.CutPrefix(line, "acked "); ok {
				if i, err := strconv.Atoi(rest); err == nil {
					c.acked = i
				}
			} else if line == "produced" {
				c.produced = true
			}
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// runProcesses runs the scenario of o.processes scheduler processes on one
// PostgreSQL schema, each enqueueing a share of the events, and kills the
// process that sends to the slack bridge once a third of the events are
// acknowledged. It checks that every acknowledged event arrived, each
// process's events in its order, with no transaction ID reused for other
// bytes and never two PUTs at once to one service.
func runProcesses(w io.Writer, o options) (bool, error) {
	w = &syncWriter{w: w}
	schema, err := newSchema()
	if err != nil {
		return false, err
	}
	// The first Open creates the schema, before the processes race to.
	ctx := context.Background()
	st, err := postgres.OpenWithOptions(ctx, o.postgres, postgres.Options{Schema: schema})
	if err != nil {
		return false, err
	}
	_ = st.Close()
	defer func() { _ = dropSchema(o.postgres, schema) }()

	bridges := newBridges()
	defer closeBridges(bridges)
	if _, err := startBridges(bridges); err != nil {
		return false, err
	}
	urls := map[string]string{}
	for _, b := range bridges {
		urls[b.name()] = b.as.URL()
	}
	fmt.Fprintf(w, "demo: %d events for 3 application services from %d scheduler processes\nstore: PostgreSQL, schema %s\n",
		o.total, o.processes, schema)

	var children []*child
	defer func() {
		for _, c := range children {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	}()
	for n := range o.processes {
		c, err := spawn(o, childSpec{N: n, Of: o.processes, Total: o.total, Schema: schema, URLs: urls})
		if err != nil {
			return false, err
		}
		children = append(children, c)
	}

	victim := bridges[2] // slack
	started := time.Now()
	var killedAt time.Time
	killed := -1
	failover := time.Duration(-1)
	deadline := started.Add(2*time.Minute + 10*time.Duration(o.total)*time.Microsecond)
	lastProgress := started
	for {
		expected := expectedEvents(children, bridges)
		if killed < 0 && ackedCount(children) >= o.total/3 {
			if n := lastSender(victim); n >= 0 {
				c := children[n]
				_ = c.cmd.Process.Signal(syscall.SIGKILL)
				c.mu.Lock()
				c.killed = true
				c.mu.Unlock()
				killed, killedAt = n, time.Now()
				fmt.Fprintf(w, "-- kill -9 of process %d, the sender to %s, at %.1fs\n", n, victim.name(), killedAt.Sub(started).Seconds())
			}
		}
		if killed >= 0 && failover < 0 {
			if at, n, ok := firstOtherSender(victim, killed, killedAt); ok {
				failover = at.Sub(killedAt)
				fmt.Fprintf(w, "-- process %d took %s over %.1fs after the kill\n", n, victim.name(), failover.Seconds())
			}
		}
		if time.Since(lastProgress) >= time.Second {
			lastProgress = time.Now()
			printProcessesProgress(w, bridges, expected, lastProgress.Sub(started))
		}
		if allProduced(children) && delivered(bridges, expected) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(w, "-- gave up waiting for the acknowledged events")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(started)
	expected := expectedEvents(children, bridges)
	printProcessesProgress(w, bridges, expected, elapsed)
	for _, c := range children {
		if !c.killed {
			_ = c.stdin.Close()
		}
	}
	var exitErr error
	for _, c := range children {
		err := c.cmd.Wait()
		<-c.done
		if !c.killed && err != nil {
			exitErr = errors.Join(exitErr, fmt.Errorf("process %d: %w", c.n, err))
		}
	}
	children = nil
	if exitErr != nil {
		return false, exitErr
	}
	fmt.Fprintf(w, "\ndone in %.1fs\n\n", elapsed.Seconds())
	ok := printProcessesTable(w, bridges, expected, o.processes, killed)
	if killed < 0 {
		fmt.Fprintln(w, "no process was killed: the run ended before a third of the events")
	} else if failover < 0 {
		fmt.Fprintf(w, "no other process sent to %s after the kill\n", victim.name())
		ok = false
	}
	return ok, nil
}

// ackedCount returns how many events the processes have acknowledged.
func ackedCount(children []*child) int {
	n := 0
	for _, c := range children {
		if last, _ := c.lastAcked(); last >= 0 {
			n += (last-c.n)/len(children) + 1
		}
	}
	return n
}

// allProduced reports whether every process still alive has enqueued its
// share.
func allProduced(children []*child) bool {
	for _, c := range children {
		_, produced := c.lastAcked()
		c.mu.Lock()
		killed := c.killed
		c.mu.Unlock()
		if !produced && !killed {
			return false
		}
	}
	return true
}

// expectedEvents returns, per bridge, the acknowledged events it wants.
func expectedEvents(children []*child, bridges []*bridge) map[*bridge]map[string]bool {
	out := map[*bridge]map[string]bool{}
	for _, b := range bridges {
		out[b] = map[string]bool{}
	}
	for _, c := range children {
		last, _ := c.lastAcked()
		for i := c.n; i <= last; i += len(children) {
			ev, err := demoEvent(i)
			if err != nil {
				continue
			}
			for _, b := range bridges {
				if b.wants(ev.Sender, ev.RoomID) {
					out[b][ev.ID] = true
				}
			}
		}
	}
	return out
}

// delivered reports whether every bridge has every event expected of it.
func delivered(bridges []*bridge, expected map[*bridge]map[string]bool) bool {
	for _, b := range bridges {
		got := map[string]bool{}
		for _, id := range b.as.Delivered() {
			got[id] = true
		}
		for id := range expected[b] {
			if !got[id] {
				return false
			}
		}
	}
	return true
}

// lastSender returns the process that sent the bridge's latest
// transaction, or -1.
func lastSender(b *bridge) int {
	reqs := b.as.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if n, err := strconv.Atoi(reqs[i].Header.Get(processHeader)); err == nil {
			return n
		}
	}
	return -1
}

// firstOtherSender returns when a process other than killed first sent to
// the bridge after the kill, and which one.
func firstOtherSender(b *bridge, killed int, after time.Time) (time.Time, int, bool) {
	for _, r := range b.as.Requests() {
		n, err := strconv.Atoi(r.Header.Get(processHeader))
		if err == nil && n != killed && r.Arrived.After(after) {
			return r.Arrived, n, true
		}
	}
	return time.Time{}, 0, false
}

// printProcessesProgress prints one line per bridge: what it received of
// the acknowledged events it wants, and which process sent to it last.
func printProcessesProgress(w io.Writer, bridges []*bridge, expected map[*bridge]map[string]bool, elapsed time.Duration) {
	for i, b := range bridges {
		st := b.as.stats()
		at := ""
		if i == 0 {
			at = fmt.Sprintf("%3.0fs", elapsed.Seconds())
		}
		fmt.Fprintf(w, "%4s  %-9s %5d/%-5d delivered  sender: process %d  failed attempts %d\n",
			at, b.as.name, st.delivered, len(expected[b]), lastSender(b), st.failures)
	}
}

// printProcessesTable prints the final table and reports whether every
// guarantee held: every acknowledged event delivered, the events of each
// process in its order, one body per transaction ID, never two PUTs at
// once to one service. Events delivered beyond the acknowledged ones must
// be the killed process's: it may have stored a call it had no time to
// report.
func printProcessesTable(out io.Writer, bridges []*bridge, expected map[*bridge]map[string]bool, processes, killed int) bool {
	ok := true
	beyond, unexplained := 0, 0
	w := tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service\tacknowledged\tdelivered\tin order\tduplicates\ttxns\tmost PUTs at once\tsenders\t")
	for _, b := range bridges {
		st := b.as.stats()
		got := map[string]bool{}
		inOrder, last := true, map[int]int{} // per producing process, the last index delivered
		for _, id := range st.order {
			got[id] = true
			var i int
			if _, err := fmt.Sscanf(id, "$demo%d:", &i); err != nil {
				inOrder = false
				continue
			}
			p := i % processes
			if !expected[b][id] {
				beyond++
				if p != killed {
					unexplained++
				}
			}
			if prev, seen := last[p]; seen && i <= prev {
				inOrder = false
			}
			last[p] = i
		}
		missing := 0
		for id := range expected[b] {
			if !got[id] {
				missing++
			}
		}
		var senders []string
		seen := map[string]bool{}
		for _, r := range b.as.Requests() {
			if p := r.Header.Get(processHeader); p != "" && !seen[p] {
				seen[p] = true
				senders = append(senders, p)
			}
		}
		slices.Sort(senders)
		most := b.as.Stats().MaxInFlight
		fmt.Fprintf(w, "%s\t%d\t%d\t%v\t%d\t%d\t%d\t%s\t\n", b.as.name, len(expected[b]), st.delivered, inOrder,
			st.duplicates, st.txns, most, strings.Join(senders, ","))
		if missing > 0 || !inOrder || len(st.problems) > 0 || most > 1 {
			ok = false
		}
		for _, p := range st.problems {
			fmt.Fprintf(out, "%s: %s\n", b.as.name, p)
		}
	}
	w.Flush()
	if beyond > 0 {
		fmt.Fprintf(out, "%d deliveries beyond the acknowledged events: the call process %d was making when it was killed\n", beyond, killed)
	}
	if unexplained > 0 {
		fmt.Fprintf(out, "%d deliveries of events no process acknowledged or was enqueueing at a kill\n", unexplained)
		ok = false
	}
	return ok
}
