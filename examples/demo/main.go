// Command demo runs the whole delivery pipeline on this machine: a simulated
// homeserver enqueues events into a Scheduler backed by a SQLite file (or a
// PostgreSQL database), three application services on 127.0.0.1 receive
// them, and one of them goes down for a while mid-run. It prints progress
// every second and a final table, and exits non-zero if any guarantee
// failed.
//
//	go run ./examples/demo [-db PATH] [-events N]
//	go run ./examples/demo -postgres DSN [-processes 3]
//
// With -postgres, the store is a fresh schema in that database, dropped at
// the end. With -processes 3 as well, three scheduler processes share it,
// each enqueueing a third of the events, and the demo kills (kill -9) the
// process that sends to one application service mid-run: another takes
// over once its lease has run out.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/sqlite"
)

const serverName = "demo.local"

// options are the demo's flags.
type options struct {
	dbPath    string        // SQLite file, "" for a new one
	postgres  string        // PostgreSQL DSN, "" for SQLite
	processes int           // scheduler processes (with postgres)
	total     int           // events to send
	outage    time.Duration // of the slack bridge (one process)
	verbose   bool          // log warnings to stderr
}

func main() {
	var o options
	flag.StringVar(&o.dbPath, "db", "", "SQLite file to use (default: a new file in a temporary directory)")
	flag.StringVar(&o.postgres, "postgres", "", "PostgreSQL DSN to use instead of SQLite (a new schema, dropped at the end)")
	flag.IntVar(&o.processes, "processes", 1, "scheduler processes on the PostgreSQL database; more than 1 kills the sender to one service mid-run")
	flag.IntVar(&o.total, "events", 12000, "events the simulated homeserver sends")
	flag.DurationVar(&o.outage, "outage", 5*time.Second, "how long the slack bridge is down mid-run (one process)")
	flag.BoolVar(&o.verbose, "v", false, "log the scheduler's warnings to stderr")
	child := flag.String("child", "", "internal: run as scheduler process N of -processes, with these settings")
	flag.Parse()
	if *child != "" {
		if err := runChild(*child, o); err != nil {
			fmt.Fprintln(os.Stderr, "demo process:", err)
			os.Exit(2)
		}
		return
	}
	var ok bool
	var err error
	switch {
	case o.processes > 1 && o.postgres == "":
		err = fmt.Errorf("-processes %d needs -postgres DSN: several processes share a PostgreSQL database", o.processes)
	case o.processes > 1:
		ok, err = runProcesses(os.Stdout, o)
	default:
		ok, err = run(os.Stdout, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if !ok {
		fmt.Println("FAIL: a guarantee did not hold")
		os.Exit(1)
	}
	fmt.Println("OK: every application service received every event it wanted, in order")
}

// openStore opens the store o names and returns it, a description for the
// output and what to do at the end.
func openStore(ctx context.Context, o options) (store.Store, string, func(), error) {
	if o.postgres != "" {
		schema, err := newSchema()
		if err != nil {
			return nil, "", nil, err
		}
		st, err := postgres.OpenWithOptions(ctx, o.postgres, postgres.Options{Schema: schema})
		if err != nil {
			return nil, "", nil, err
		}
		return st, "PostgreSQL, schema " + schema, func() {
			_ = st.Close()
			_ = dropSchema(o.postgres, schema)
		}, nil
	}
	dbPath, cleanup := o.dbPath, func() {}
	if dbPath == "" {
		dir, err := os.MkdirTemp("", "asdeliver-demo-")
		if err != nil {
			return nil, "", nil, err
		}
		dbPath, cleanup = filepath.Join(dir, "asdeliver.db"), func() { _ = os.RemoveAll(dir) }
	}
	st, err := sqlite.Open(dbPath)
	if err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return st, dbPath, func() { _ = st.Close(); cleanup() }, nil
}

// newSchema returns the name of a schema of the demo's own.
func newSchema() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "asdeliver_demo_" + hex.EncodeToString(b[:]), nil
}

// dropSchema drops the demo's schema and everything in it.
func dropSchema(dsn, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// syncWriter serialises the writes of several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// bridge is one demo application service and the users it puppets.
type bridge struct {
	as        *appService
	reg       *scheduler.Registration
	prefix    string       // its users' localpart prefix
	rooms     string       // its rooms' ID prefix, "" if none
	ephemeral bool         // opts in to typing, receipts and to-device messages
	expected  []string     // event IDs it must receive, in enqueue order
	owed      atomic.Int64 // len(expected), for the progress lines
	edus      int          // typing notifications and receipts it must receive
	toDevice  int          // to-device messages it must receive
}

func (b *bridge) wants(sender, room string) bool {
	return strings.HasPrefix(sender, "@"+b.prefix) || (b.rooms != "" && strings.HasPrefix(room, b.rooms))
}

// newBridges returns the demo's three bridges, without their servers.
func newBridges() []*bridge {
	return []*bridge{
		{prefix: "whatsapp_", rooms: "!wa-", ephemeral: true},
		{prefix: "irc_", rooms: "!irc-"},
		{prefix: "slack_"},
	}
}

// name returns the bridge's service ID.
func (b *bridge) name() string { return strings.TrimSuffix(b.prefix, "_") }

// registration returns the bridge's registration, for its AS at url.
func (b *bridge) registration(url string) (*scheduler.Registration, error) {
	name := b.name()
	yaml := fmt.Sprintf(`id: %s
url: %s
as_token: as-token-%s
hs_token: hs-token-%s
sender_localpart: %sbot
namespaces:
  users:
    - exclusive: true
      regex: '@%s.*:demo\.local'
`, name, url, name, name, name, b.prefix)
	if b.rooms != "" {
		yaml += fmt.Sprintf("  rooms:\n    - exclusive: false\n      regex: '%s.*'\n", b.rooms)
	}
	if b.ephemeral {
		yaml += "receive_ephemeral: true\nde.sorunome.msc2409.push_ephemeral: true\n"
	}
	return scheduler.ParseRegistration([]byte(yaml))
}

// startBridges starts an application service for each bridge and returns
// their registrations; close the services with closeBridges.
func startBridges(bridges []*bridge) ([]*scheduler.Registration, error) {
	var regs []*scheduler.Registration
	for _, b := range bridges {
		b.as = newAppService(b.name(), "hs-token-"+b.name())
		reg, err := b.registration(b.as.URL())
		if err != nil {
			return nil, err
		}
		b.reg = reg
		regs = append(regs, reg)
	}
	return regs, nil
}

// closeBridges closes the bridges' application services.
func closeBridges(bridges []*bridge) {
	for _, b := range bridges {
		if b.as != nil {
			b.as.Close()
		}
	}
}

// logger returns the scheduler's logger: warnings to stderr with verbose.
func logger(verbose bool) *slog.Logger {
	if verbose {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

func run(w io.Writer, o options) (bool, error) {
	w = &syncWriter{w: w} // the producer, the outage and the progress print at once
	ctx := context.Background()
	st, where, closeStore, err := openStore(ctx, o)
	if err != nil {
		return false, err
	}
	defer closeStore()

	bridges := newBridges()
	defer closeBridges(bridges)
	regs, err := startBridges(bridges)
	if err != nil {
		return false, err
	}

	s, err := scheduler.New(scheduler.Config{
		ServerName: serverName,
		Services:   regs,
		Store:      st,
		Logger:     logger(o.verbose),
	})
	if err != nil {
		return false, err
	}
	if err := s.Start(ctx); err != nil {
		return false, err
	}
	fmt.Fprintf(w, "demo: %d events for 3 application services\nstore: %s\n", o.total, where)

	started := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				printProgress(ctx, w, s, bridges, time.Since(started))
			}
		}
	}()

	if err := produce(ctx, w, s, bridges, o.total, o.outage); err != nil {
		close(stopProgress)
		<-progressDone
		_ = s.Stop(ctx)
		return false, err
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := waitDelivered(wait, bridges); err != nil {
		fmt.Fprintf(w, "-- gave up waiting: %v\n", err)
	} else if err := waitSettled(wait, s, bridges); err != nil {
		fmt.Fprintf(w, "-- gave up waiting for every service to be UP with nothing left: %v\n", err)
	}
	cancel()
	elapsed := time.Since(started)
	close(stopProgress)
	<-progressDone
	printProgress(ctx, w, s, bridges, elapsed)
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		return false, fmt.Errorf("stopping the scheduler: %w", err)
	}
	fmt.Fprintf(w, "\ndone in %.1fs\n\n", elapsed.Seconds())
	return printTable(w, bridges), nil
}

// produce plays the homeserver: events from users of every bridge and from
// plain users, in calls of 1 to 50 events, paced over a few seconds, with
// the slack bridge down for the outage in the middle.
func produce(ctx context.Context, w io.Writer, s *scheduler.Scheduler, bridges []*bridge, total int, outage time.Duration) error {
	rng := mrand.New(mrand.NewPCG(2026, 11))
	down := bridges[2]
	const pace = 2 * time.Millisecond // per call: ~10,000 events in ~5 s of calls
	downAt := total / 3
	for n := 0; n < total; {
		if n >= downAt && downAt >= 0 {
			fmt.Fprintf(w, "-- %s bridge goes down for %v\n", down.as.name, outage)
			down.as.Down()
			downAt = -1
			go func() {
				time.Sleep(outage)
				down.as.Up()
				fmt.Fprintf(w, "-- %s bridge is back; it pings the homeserver\n", down.as.name)
				s.ServiceUp(down.reg.ID)
			}()
		}
		batch := min(1+rng.IntN(50), total-n)
		events := make([]scheduler.Event, 0, batch)
		for i := range batch {
			ev, err := demoEvent(n + i)
			if err != nil {
				return err
			}
			events = append(events, ev)
			for _, b := range bridges {
				if b.wants(ev.Sender, ev.RoomID) {
					b.expected = append(b.expected, ev.ID)
					b.owed.Add(1)
				}
			}
		}
		if err := s.Enqueue(ctx, events...); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		if err := sendEphemeral(ctx, s, bridges, rng, n); err != nil {
			return err
		}
		n += batch
		time.Sleep(pace)
	}
	return nil
}

// demoEvent returns the i-th event of the simulated homeserver, the same
// in every process: a message from a user of one of the bridges or a
// plain user, in a plain room or an IRC-bridged one.
func demoEvent(i int) (scheduler.Event, error) {
	rng := mrand.New(mrand.NewPCG(uint64(i), 2026))
	senders := []string{"whatsapp_", "irc_", "slack_", "alice", "bob"}
	sender := fmt.Sprintf("@%s%d:%s", senders[rng.IntN(len(senders))], rng.IntN(100), serverName)
	room := fmt.Sprintf("!room-%d:%s", rng.IntN(20), serverName)
	if rng.IntN(4) == 0 {
		room = fmt.Sprintf("!irc-%d:%s", rng.IntN(5), serverName)
	}
	raw, err := json.Marshal(map[string]any{
		"event_id": fmt.Sprintf("$demo%06d:%s", i, serverName), "room_id": room, "sender": sender,
		"type": "m.room.message", "origin_server_ts": time.Now().UnixMilli(),
		"content": map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)},
	})
	if err != nil {
		return scheduler.Event{}, err
	}
	return scheduler.ParseEvent(raw)
}

// sendEphemeral plays the homeserver's typing, read-receipt and to-device
// traffic: a typing notification and a receipt in a WhatsApp-bridged room
// and a to-device message to a bridged device, each marked so the AS can
// count it. Only the bridge that opted in receives them.
func sendEphemeral(ctx context.Context, s *scheduler.Scheduler, bridges []*bridge, rng *mrand.Rand, n int) error {
	room := fmt.Sprintf("!wa-%d:%s", rng.IntN(5), serverName)
	user := fmt.Sprintf("@whatsapp_%d:%s", rng.IntN(100), serverName)
	typing, err := json.Marshal(map[string]any{"type": "m.typing", "room_id": room,
		"content": map[string]any{"user_ids": []string{user}, "demo_marker": fmt.Sprintf("typing-%d", n)}})
	if err != nil {
		return err
	}
	receipt, err := json.Marshal(map[string]any{"type": "m.receipt", "room_id": room,
		"content": map[string]any{
			fmt.Sprintf("$demo%06d:%s", n, serverName): map[string]any{"m.read": map[string]any{user: map[string]any{"ts": time.Now().UnixMilli()}}},
			"demo_marker": fmt.Sprintf("receipt-%d", n)}})
	if err != nil {
		return err
	}
	var edus []scheduler.EphemeralEvent
	for _, raw := range [][]byte{typing, receipt} {
		ev, err := scheduler.ParseEphemeralEvent(raw)
		if err != nil {
			return err
		}
		edus = append(edus, ev)
	}
	if err := s.EnqueueEphemeral(ctx, edus...); err != nil {
		return fmt.Errorf("enqueue ephemeral: %w", err)
	}
	content, err := json.Marshal(map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "demo_marker": fmt.Sprintf("todevice-%d", n)})
	if err != nil {
		return err
	}
	msg := scheduler.ToDeviceMessage{Sender: "@alice:" + serverName, Type: "m.room_key_request",
		ToUserID: user, ToDeviceID: "WHATSAPPDEV", Content: content}
	if err := s.EnqueueToDevice(ctx, msg); err != nil {
		return fmt.Errorf("enqueue to-device: %w", err)
	}
	for _, b := range bridges {
		if b.ephemeral {
			b.edus += len(edus)
			b.toDevice++
		}
	}
	return nil
}

// waitDelivered waits until every bridge has received every event, typing
// notification, receipt and to-device message it is owed.
func waitDelivered(ctx context.Context, bridges []*bridge) error {
	for _, b := range bridges {
		if err := b.as.WaitDelivered(ctx, len(b.expected)); err != nil {
			return fmt.Errorf("%s: %w", b.as.name, err)
		}
		err := b.as.Wait(ctx, func() bool {
			st := b.as.stats()
			return st.edus >= b.edus && st.toDevice >= b.toDevice
		})
		if err != nil {
			return fmt.Errorf("%s: typing, receipts and to-device messages: %w", b.as.name, err)
		}
	}
	return nil
}

// printProgress prints one line per bridge, at most 80 columns wide, with
// the names the final table uses.
func printProgress(ctx context.Context, w io.Writer, s *scheduler.Scheduler, bridges []*bridge, elapsed time.Duration) {
	for i, b := range bridges {
		st := b.as.stats()
		state, queued, txns := "?", 0, 0
		if status, err := s.Status(ctx, b.reg.ID); err == nil {
			state, queued, txns = string(status.State), status.QueuedEvents, status.StoredTxns
		}
		at := ""
		if i == 0 {
			at = fmt.Sprintf("%3.0fs", elapsed.Seconds())
		}
		fmt.Fprintf(w, "%4s  %-9s %5d/%-5d delivered  %-4s  waiting %4d + %d txn  failed attempts %d\n",
			at, b.as.name, st.delivered, b.owed.Load(), state, queued, txns, st.failures)
	}
}

// waitSettled waits until every bridge's service is UP with nothing
// stored or queued: a Recoverer hands a service back only once it has
// completed its last transaction, shortly after the AS has it.
func waitSettled(ctx context.Context, s *scheduler.Scheduler, bridges []*bridge) error {
	for {
		settled := true
		for _, b := range bridges {
			st, err := s.Status(ctx, b.reg.ID)
			if err != nil {
				return err
			}
			if st.State != scheduler.StateUp || st.QueuedEvents > 0 || st.StoredTxns > 0 {
				settled = false
			}
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// printTable prints the final table and reports whether every guarantee held.
func printTable(out io.Writer, bridges []*bridge) bool {
	ok := true
	w := tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service\texpected\tdelivered\tin order\tduplicates\ttxns\tevents/txn\tfailed attempts\tephemeral\tto-device\t")
	for _, b := range bridges {
		st := b.as.stats()
		inOrder := slices.Equal(st.order, b.expected)
		perTxn := 0.0
		if st.txns > 0 {
			perTxn = float64(st.delivered+st.duplicates) / float64(st.txns)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%v\t%d\t%d\t%.1f\t%d\t%d/%d\t%d/%d\t\n",
			b.as.name, len(b.expected), st.delivered, inOrder, st.duplicates, st.txns, perTxn, st.failures,
			st.edus, b.edus, st.toDevice, b.toDevice)
		if !inOrder || st.delivered != len(b.expected) || len(st.problems) > 0 || st.edus != b.edus || st.toDevice != b.toDevice {
			ok = false
		}
		for _, p := range st.problems {
			fmt.Fprintf(out, "%s: %s\n", b.as.name, p)
		}
	}
	w.Flush()
	return ok
}
