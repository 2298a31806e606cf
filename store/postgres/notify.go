package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/asdeliver/scheduler/store"
)

// notice is the payload of a notification on the schema's channel. Every
// commit that appends sends at most one, listing the services it queued
// items for.
type notice struct {
	// Origin names the Store that sent it; its own listener skips it.
	Origin string `json:"o,omitempty"`
	// Work lists services that got items.
	Work []string `json:"w,omitempty"`
	// Up lists services for which ServiceUp was called.
	Up []string `json:"u,omitempty"`
	// All stands for Work when it would not fit a notification: every
	// service with queued items is to be signalled.
	All bool `json:"a,omitempty"`
	// Outbox says that rows were committed to the outbox: every store
	// forwards them.
	Outbox bool `json:"x,omitempty"`
}

// maxPayload is the longest payload the Store sends: PostgreSQL refuses
// 8000 bytes or more.
const maxPayload = 7900

// encode returns n as a payload.
func (n notice) encode() string {
	p, _ := json.Marshal(n) // strings and bools only: cannot fail
	return string(p)
}

// workNotice returns the payload that tells the other Stores of work for
// services.
func (s *Store) workNotice(services []string) string {
	p := notice{Origin: s.origin, Work: services}.encode()
	if len(p) > maxPayload {
		p = notice{Origin: s.origin, All: true}.encode()
	}
	return p
}

// outboxNotice is the payload that tells every Store to forward the
// outbox.
var outboxNotice = notice{Outbox: true}.encode()

// watchers are the functions that Watch calls run, and what the Store
// knows of its own signals, so as not to report them back.
type watchers struct {
	// mu is held while the functions are called, so that Watch, which
	// takes it to remove its function, returns only once its function
	// will not be called again.
	mu   sync.Mutex
	next int
	fns  map[int]func(store.Signal)

	// own holds, per service, the last_seq that this Store's own Append
	// left in the heads table and the up_gen that its own ServiceUp
	// left, so that a polling Store does not report them.
	ownMu  sync.Mutex
	ownSeq map[string]int64
	ownUp  map[string]int64
}

// add registers fn and returns its key.
func (w *watchers) add(fn func(store.Signal)) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = make(map[int]func(store.Signal))
	}
	w.next++
	w.fns[w.next] = fn
	return w.next
}

// remove unregisters the function of key, waiting for a call of it in
// progress.
func (w *watchers) remove(key int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.fns, key)
}

// any reports whether a function is registered.
func (w *watchers) any() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.fns) > 0
}

// deliver calls every registered function with each signal.
func (w *watchers) deliver(sigs []store.Signal) {
	if len(sigs) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range w.fns {
		for _, sig := range sigs {
			fn(sig)
		}
	}
}

// appended records that this Store's Append left last_seq at seq.
func (w *watchers) appended(service string, seq int64) { w.record(&w.ownSeq, service, seq) }

// upSent records that this Store's ServiceUp left up_gen at gen.
func (w *watchers) upSent(service string, gen int64) { w.record(&w.ownUp, service, gen) }

// record sets service's value in *m, one of the own maps, to v.
func (w *watchers) record(m *map[string]int64, service string, v int64) {
	w.ownMu.Lock()
	defer w.ownMu.Unlock()
	if *m == nil {
		*m = make(map[string]int64)
	}
	(*m)[service] = v
}

// own reports whether the last_seq and up_gen of service are the ones
// this Store's own calls left.
func (w *watchers) own(service string, seq, gen int64) (seqOwn, genOwn bool) {
	w.ownMu.Lock()
	defer w.ownMu.Unlock()
	return w.ownSeq[service] == seq, w.ownUp[service] == gen
}

// work returns a SignalWork for each service.
func work(services []string) []store.Signal {
	sigs := make([]store.Signal, len(services))
	for i, svc := range services {
		sigs[i] = store.Signal{Service: svc, Kind: store.SignalWork}
	}
	return sigs
}

// Watch calls fn with the signals that reach the Store, as
// store.Notifier documents, until ctx ends or the Store is closed.
//
// With a listener (the default), a notification sent by another Store's
// commit reaches fn within milliseconds; when the listener's connection
// breaks, the Store reconnects and then reports SignalWork for every
// service with queued items, as some notifications may have been lost.
// With Options.PollOnly, the Store compares the counters of the heads
// table every Options.PollInterval and reports the services whose
// counters another Store moved.
//
// Items that the Store forwards from the outbox (see AppendTx) are
// reported to its own watchers as well, since no caller of this Store
// appended them.
func (s *Store) Watch(ctx context.Context, fn func(store.Signal)) error {
	const op = "watching for signals"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	if fn == nil {
		return invalid(op, "nil function")
	}
	key := s.watch.add(fn)
	defer s.watch.remove(key)
	select {
	case <-ctx.Done():
		return fmt.Errorf("postgres: %s: %w", op, ctx.Err())
	case <-s.closing:
		return fmt.Errorf("postgres: %s: %w", op, store.ErrClosed)
	}
}

// ServiceUp publishes store.SignalServiceUp for service to the other
// Stores of the schema, as store.Notifier documents: at once to those that
// listen, within a poll interval to those with Options.PollOnly. It does
// not wait for its commit to reach the disk: the signal is a hint that
// nothing depends on after a crash.
func (s *Store) ServiceUp(ctx context.Context, service string) error {
	const op = "publishing ServiceUp"
	if err := s.enterService(ctx, op, service); err != nil {
		return err
	}
	if err := s.ensure(ctx, []string{service}); err != nil {
		return s.fail(op, err)
	}
	var gen int64
	b := &pgx.Batch{}
	b.Queue(s.sql.serviceUp, service).QueryRow(func(row pgx.Row) error { return row.Scan(&gen) })
	b.Queue(s.sql.serviceUpNotify, s.channel, notice{Origin: s.origin, Up: []string{service}}.encode())
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return s.fail(op, err)
	}
	s.watch.upSent(service, gen)
	return nil
}

// listener is the connection that LISTENs on the schema's channel.
type listener struct {
	conn *pgx.Conn
}

// listen opens a listener.
func (s *Store) listen(ctx context.Context) (*listener, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("opening the listener connection: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("listening on channel %s: %w", s.channel, err)
	}
	return &listener{conn: conn}, nil
}

// close closes the listener's connection.
func (l *listener) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.conn.Close(ctx)
}

// run is the Store's background goroutine, until ctx ends: it receives
// notifications on l (or polls, with Options.PollOnly, when l is nil),
// forwards the outbox, and calls the watchers.
func (s *Store) run(ctx context.Context, l *listener) {
	if l == nil {
		s.poll(ctx)
		return
	}
	retry := s.opts.PollInterval / 8
	for {
		err := s.receive(ctx, l)
		l.close()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("asdeliver postgres store: the listener's connection failed; polling until it is back", "error", err)
		for l = nil; l == nil; {
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			s.tick(ctx)
			if l, err = s.listen(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("asdeliver postgres store: reconnecting the listener", "error", err)
				retry = min(2*retry, s.opts.PollInterval)
			}
		}
		retry = s.opts.PollInterval / 8
		// Notifications sent while it was away are lost: report every
		// service that has work.
		s.resync(ctx)
	}
}

// receive handles the notifications that reach l until its connection
// fails or ctx ends. It forwards the outbox when told to and at least once
// per poll interval.
func (s *Store) receive(ctx context.Context, l *listener) error {
	next := time.Now().Add(s.opts.PollInterval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := l.conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && (errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)):
		case err != nil:
			return err
		default:
			s.handle(ctx, n.Payload)
		}
		if !time.Now().Before(next) {
			s.tick(ctx)
			next = time.Now().Add(s.opts.PollInterval)
		}
	}
}

// handle acts on one notification.
func (s *Store) handle(ctx context.Context, payload string) {
	var n notice
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		s.log.Warn("asdeliver postgres store: ignoring a notification that does not parse", "error", err)
		return
	}
	if n.Outbox {
		s.forward(ctx)
	}
	if n.Origin == s.origin || !s.watch.any() {
		return
	}
	if n.All {
		s.resync(ctx)
	}
	sigs := work(n.Work)
	for _, svc := range n.Up {
		sigs = append(sigs, store.Signal{Service: svc, Kind: store.SignalServiceUp})
	}
	s.watch.deliver(sigs)
}

// tick is the periodic work: forward outbox rows that no notification
// announced (one sent while no Store listened, say).
func (s *Store) tick(ctx context.Context) {
	var found bool
	if err := s.pool.QueryRow(ctx, s.sql.outboxAny).Scan(&found); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("asdeliver postgres store: looking for outbox rows", "error", err)
		}
		return
	}
	if found {
		s.forward(ctx)
	}
}

// resync reports SignalWork for every service with queued items.
func (s *Store) resync(ctx context.Context) {
	if !s.watch.any() {
		return
	}
	rows, err := s.pool.Query(ctx, s.sql.pendingServices)
	if err != nil {
		s.log.Warn("asdeliver postgres store: listing services with work", "error", err)
		return
	}
	services, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.log.Warn("asdeliver postgres store: listing services with work", "error", err)
		return
	}
	s.watch.deliver(work(services))
}

// headState is what a polling Store saw of a heads row.
type headState struct {
	lastSeq, upGen int64
}

// poll is run for Options.PollOnly: every poll interval it forwards the
// outbox and reports the services whose heads counters another Store
// moved.
func (s *Store) poll(ctx context.Context) {
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	var seen map[string]headState
	for {
		seen = s.pollHeads(ctx, seen)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.tick(ctx)
	}
}

// pollHeads reads the heads table, reports what changed since seen (nil
// the first time: nothing is reported) and returns what it read.
func (s *Store) pollHeads(ctx context.Context, seen map[string]headState) map[string]headState {
	rows, err := s.pool.Query(ctx, s.sql.heads)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("asdeliver postgres store: polling for signals", "error", err)
		}
		return seen
	}
	now := make(map[string]headState)
	var sigs []store.Signal
	var svc string
	var h headState
	_, err = pgx.ForEachRow(rows, []any{&svc, &h.lastSeq, &h.upGen}, func() error {
		now[svc] = h
		if seen == nil {
			return nil
		}
		old := seen[svc] // zero for a service new since the last poll
		seqOwn, genOwn := s.watch.own(svc, h.lastSeq, h.upGen)
		if h.lastSeq > old.lastSeq && !seqOwn {
			sigs = append(sigs, store.Signal{Service: svc, Kind: store.SignalWork})
		}
		if h.upGen > old.upGen && !genOwn {
			sigs = append(sigs, store.Signal{Service: svc, Kind: store.SignalServiceUp})
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("asdeliver postgres store: polling for signals", "error", err)
		}
		return seen
	}
	s.watch.deliver(sigs)
	return now
}
