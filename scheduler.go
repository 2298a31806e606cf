package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/asdeliver/scheduler/internal/clock"
	"github.com/asdeliver/scheduler/internal/lifecycle"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// Scheduler delivers events to application services. Create it with New,
// run it with Start, feed it with Enqueue, end it with Stop. Its methods are
// safe for concurrent use.
type Scheduler struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	roster  atomic.Pointer[roster] // the services in force; see UpdateServices
	reload  reloading
	deps    deliveryDeps // of every deliverer
	owner   string       // lease owner name, unique per Scheduler
	sender  *wire.Sender
	pool    *eventPool
	signals *signals // nil unless the Store is shared by several processes (store.Notifier)

	mu    sync.Mutex
	state runState
	group *lifecycle.Group // owns every goroutine; set by Start
}

type runState int

const (
	stateNew runState = iota
	stateStarted
	stateStopped
)

// New validates cfg, fills its defaults and returns a Scheduler that is not
// yet running. It does no I/O and starts no goroutine. Errors name the
// field at fault and match ErrInvalidConfig or ErrInvalidRegistration.
func New(cfg Config) (*Scheduler, error) {
	return newScheduler(cfg, clock.Real())
}

// newScheduler is New with the clock every wait, lease and timestamp
// reads: tests pass a fake one.
func newScheduler(cfg Config, clk clock.Clock) (*Scheduler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("error generating the lease owner name: %w", err)
	}
	s := &Scheduler{
		cfg:    cfg,
		log:    cfg.Logger,
		clock:  clk,
		owner:  "asdeliver-" + hex.EncodeToString(id[:]),
		sender: wire.NewSender(cfg.HTTPClient, cfg.ConnectTimeout, cfg.AnswerTimeout),
		reload: reloading{retiring: make(map[string]*deliverer)},
	}
	s.deps = deliveryDeps{
		store:     cfg.Store,
		sender:    s.sender,
		clock:     clk,
		log:       cfg.Logger,
		limits:    txnLimits(cfg),
		retry:     retryPolicy{initial: cfg.RetryInitial, max: cfg.RetryMax, jitter: cfg.RetryJitter},
		owner:     s.owner,
		leaseTTL:  cfg.LeaseTTL,
		pause:     cfg.PollInterval,
		queryAuth: cfg.LegacyQueryAuth,
		observer:  cfg.Observer,
	}
	r, _ := s.newRoster(cfg.Services, nil)
	s.roster.Store(r)
	warnMissingHooks(cfg.Logger, cfg.Rooms, cfg.Services)
	if n, ok := cfg.Store.(store.Notifier); ok {
		s.signals = &signals{notifier: n, deliverer: s.deliverer, clock: clk, log: cfg.Logger,
			pause: cfg.PollInterval, ups: make(chan string, 64)}
	}
	s.pool = newEventPool(cfg.Store, cfg.MaxPoolEvents, cfg.MaxPoolBytes, s.wakeServices, s.countQueued)
	return s, nil
}

// Start checks that the Store answers, then starts delivering in the
// background: every service with stored work gets an attempt at once. ctx
// bounds only that check; the scheduler runs until Stop. Starting twice, or
// after Stop, is an error.
func (s *Scheduler) Start(ctx context.Context) error {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateStarted:
		return ErrAlreadyStarted
	case stateStopped:
		return ErrStopped
	}
	backlogs, err := s.cfg.Store.Backlogs(ctx)
	if err != nil {
		return fmt.Errorf("error checking the store: %w", err)
	}
	for _, b := range backlogs {
		if d := s.deliverer(b.Service); d != nil {
			d.queued.Store(int64(b.Queued))
			continue
		}
		s.log.Warn("the store holds work for a service that is not configured; it is kept until purged",
			"service", b.Service, "txns", b.Txns, "queued", b.Queued)
	}

	// The goroutines' run context carries ctx's values but not its end:
	// Stop ends it.
	g := lifecycle.New(ctx)
	g.Go(func(ctx context.Context) { s.pool.run(ctx, g.Stopping()) })
	for _, d := range s.current().deliverers {
		launch(g, d)
	}
	p := &poller{store: s.cfg.Store, clock: s.clock, interval: s.cfg.PollInterval, log: s.log, deliverer: s.deliverer}
	g.Go(func(ctx context.Context) { p.run(ctx, g.Stopping()) })
	if s.signals != nil {
		g.Go(func(ctx context.Context) { s.signals.run(ctx, g.Stopping()) })
	}
	s.group = g
	s.state = stateStarted
	return nil
}

// Stop stops the scheduler. New and waiting Enqueue calls get ErrStopped;
// commits already begun finish; no new transaction is formed; a PUT in
// flight may finish until ctx ends, then it is cancelled. Stop always waits
// for every goroutine the scheduler started and returns ctx.Err() if ctx
// ended first. It does not close the Store. Nothing accepted is lost: the
// next Start on the same Store delivers it. Every call returns only once
// the scheduler has stopped (or its own ctx has ended), also when several
// run at once. Stop before Start returns nil.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.state = stateStopped
	g := s.group
	s.mu.Unlock()
	if g == nil {
		return nil // never started
	}
	err := g.Stop(ctx)
	s.sender.CloseIdleConnections()
	return err
}

// wakeServices wakes the owners of services with work the store has just
// ordered, before its commit (see eventPool.commit).
func (s *Scheduler) wakeServices(queued map[string]int) {
	for id := range queued {
		if d := s.deliverer(id); d != nil {
			d.wake()
		}
	}
}

// countQueued raises the services' estimates of their queued items after a
// commit, and wakes them unless they were woken when the call was ordered:
// a pass begun since then runs after the items were appended and sees
// them.
func (s *Scheduler) countQueued(queued map[string]int, woken bool) {
	for id, n := range queued {
		if d := s.deliverer(id); d != nil {
			d.queued.Add(int64(n))
			if !woken {
				d.wake()
			}
		}
	}
}

// Enqueue hands events to the scheduler and returns once they are durable
// in the Store, for every service that wants them: the whole call or
// nothing. Events that no service wants are not stored. An event whose ID
// is still pending for a service is not queued twice for it, so replaying
// a stream after a crash is safe.
//
// Every event is validated first (see ParseEvent); an invalid one fails the
// call with an *InvalidEventError, one larger than Config.MaxTxnBytes with
// an *EventTooLargeError, and a call larger than the pool with
// ErrBatchTooLarge. ctx bounds only the wait for room in the pool: once the
// commit has begun, Enqueue reports its real outcome, so a caller never
// retries a call that was in fact stored. Before Start it returns
// ErrNotStarted, once Stop has begun ErrStopped.
//
// Pass the events you have in one call: each call costs a commit, shared
// with whatever other calls are waiting at that moment.
func (s *Scheduler) Enqueue(ctx context.Context, events ...Event) error {
	return s.intake(ctx, listBatch(s, "events", countFirst|allAfter, events), s.submit)
}

// ServiceUp tells the scheduler that the application service serviceID is
// reachable again (it pinged the homeserver, say): a retry wait in progress
// is cut short. It never changes state and is a no-op for a service that
// is UP or unknown. With a Store shared by several processes
// (store.Notifier), it also reaches the process that delivers to the
// service, if that is another one.
func (s *Scheduler) ServiceUp(serviceID string) {
	d := s.deliverer(serviceID)
	if d == nil {
		return
	}
	d.serviceUp()
	if s.signals != nil && s.accepting() == nil {
		s.signals.publish(serviceID)
	}
}
