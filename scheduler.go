package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// Scheduler delivers events to application services. Create it with New,
// run it with Start, feed it with Enqueue, end it with Stop. Its methods are
// safe for concurrent use.
type Scheduler struct {
	cfg      Config
	log      *slog.Logger
	sorter   *eventSorter
	services map[string]*service // configured services, by ID
	limits   store.Limits
	owner    string // lease owner name, unique per Scheduler
	sender   *wire.Sender
	pool     *eventPool

	// newTimer is the clock seam for waits: tests replace it to drive
	// backoff without real time.
	newTimer func(time.Duration) (<-chan time.Time, func() bool)

	mu       sync.Mutex
	state    runState
	stopping chan struct{} // closed when Stop begins
	cancel   context.CancelFunc
	wg       sync.WaitGroup
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
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("error generating the lease owner name: %w", err)
	}
	s := &Scheduler{
		cfg:      cfg,
		log:      cfg.Logger,
		sorter:   newEventSorter(cfg.ServerName, cfg.Services, cfg.Rooms),
		services: make(map[string]*service, len(cfg.Services)),
		limits:   txnLimits(cfg),
		owner:    "asdeliver-" + hex.EncodeToString(id[:]),
		stopping: make(chan struct{}),
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}
	for _, reg := range cfg.Services {
		if reg.URL != "" {
			s.services[reg.ID] = newService(s, reg)
		}
	}
	s.pool = newEventPool(cfg.Store, cfg.MaxPoolEvents, cfg.MaxPoolBytes, s.wakeServices, s.countQueued)
	return s, nil
}

// Start checks that the Store answers, then starts delivering in the
// background: every service with stored work gets an attempt at once. ctx
// bounds only that check; the scheduler runs until Stop. Starting twice, or
// after Stop, is an error.
func (s *Scheduler) Start(ctx context.Context) error {
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
		if svc := s.services[b.Service]; svc != nil {
			svc.queued.Store(int64(b.Queued))
			continue
		}
		s.log.Warn("the store holds work for a service that is not configured; it is kept until purged",
			"service", b.Service, "txns", b.Txns, "queued", b.Queued)
	}
	s.sender = wire.NewSender(s.cfg.HTTPClient, s.cfg.ConnectTimeout, s.cfg.AnswerTimeout)

	// The run context carries ctx's values but not its end: Stop ends it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// Commits begun before Stop finish even after Stop cancels runCtx.
	s.wg.Go(func() { s.pool.run(context.WithoutCancel(runCtx)) })
	for _, svc := range s.services {
		s.wg.Go(func() { svc.run(runCtx) })
	}
	s.wg.Go(func() { s.poll(runCtx, s.cfg.PollInterval) })
	s.state = stateStarted
	return nil
}

// Stop stops the scheduler. New and waiting Enqueue calls get ErrStopped;
// commits already begun finish; no new transaction is formed; a PUT in
// flight may finish until ctx ends, then it is cancelled. Stop always waits
// for every goroutine the scheduler started and returns ctx.Err() if ctx
// ended first. It does not close the Store. Nothing accepted is lost: the
// next Start on the same Store delivers it. Stop before Start, or twice,
// returns nil.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateStarted {
		s.state = stateStopped
		s.mu.Unlock()
		return nil
	}
	s.state = stateStopped
	close(s.stopping)
	s.mu.Unlock()

	s.pool.close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.cancel()
	<-done
	s.sender.CloseIdleConnections()
	return err
}

func (s *Scheduler) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// wakeServices wakes the owners of services with work the store has just
// ordered, before its commit (see eventPool.commit).
func (s *Scheduler) wakeServices(queued map[string]int) {
	for id := range queued {
		if svc := s.services[id]; svc != nil {
			svc.wake()
		}
	}
}

// countQueued raises the services' estimates of their queued items after a
// commit, and wakes them unless they were woken when the call was ordered:
// a pass begun since then runs after the items were appended and sees
// them.
func (s *Scheduler) countQueued(queued map[string]int, woken bool) {
	for id, n := range queued {
		if svc := s.services[id]; svc != nil {
			svc.queued.Add(int64(n))
			if !woken {
				svc.wake()
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
	return s.intake(ctx, listBatch(s, "events", countFirst|allAfter, events))
}

// ServiceUp tells the scheduler that the application service serviceID is
// reachable again (it pinged the homeserver, say): a retry wait in progress
// is cut short. It never changes state and is a no-op for a service that
// is UP or unknown.
func (s *Scheduler) ServiceUp(serviceID string) {
	if svc := s.services[serviceID]; svc != nil {
		svc.serviceUp()
	}
}
