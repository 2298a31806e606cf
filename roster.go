package scheduler

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/asdeliver/scheduler/internal/lifecycle"
)

// roster is the set of services in force: what Config.Services said at
// New, replaced whole by each UpdateServices. Enqueue decides interest
// with one roster's sorter, so a call is routed by one configuration.
type roster struct {
	regs       []*Registration       // as configured; url: null ones included
	sorter     *eventSorter          // interest rules of the ones with a URL
	deliverers map[string]*deliverer // the ones with a URL, by ID
}

// reloading serialises UpdateServices calls, and them with Start.
type reloading struct {
	mu       sync.Mutex
	retiring map[string]*deliverer // removed deliverers that may still run
}

// current returns the roster in force.
func (s *Scheduler) current() *roster { return s.roster.Load() }

// deliverer returns the deliverer of the configured service id, or nil.
func (s *Scheduler) deliverer(id string) *deliverer { return s.current().deliverers[id] }

// sorter returns the EventSorter of the roster in force.
func (s *Scheduler) sorter() *eventSorter { return s.current().sorter }

// newRoster builds the roster of regs, reusing the deliverers of old (nil
// at New) for the IDs it keeps, with their registrations replaced. It
// returns the deliverers it created.
func (s *Scheduler) newRoster(regs []*Registration, old *roster) (*roster, []*deliverer) {
	r := &roster{
		regs:       slices.Clone(regs),
		sorter:     newEventSorter(s.cfg.ServerName, regs, s.cfg.Rooms),
		deliverers: make(map[string]*deliverer, len(regs)),
	}
	var created []*deliverer
	for _, reg := range regs {
		if reg.URL == "" {
			continue
		}
		if old != nil {
			if d := old.deliverers[reg.ID]; d != nil {
				d.reg.Store(reg)
				r.deliverers[reg.ID] = d
				continue
			}
		}
		d := newDeliverer(s.deps, reg)
		r.deliverers[reg.ID] = d
		created = append(created, d)
	}
	return r, created
}

// launch starts d's goroutine in g; it runs until Stop, or until d is
// retired by UpdateServices.
func launch(g *lifecycle.Group, d *deliverer) {
	g.Go(func(ctx context.Context) {
		defer close(d.ended)
		stop := make(chan struct{})
		var merging sync.WaitGroup
		merging.Go(func() {
			select {
			case <-g.Stopping():
			case <-d.retired:
			}
			close(stop)
		})
		d.run(ctx, stop)
		merging.Wait()
	})
}

// UpdateServices replaces the configured application services while the
// scheduler runs (or before Start): regs is the whole new list, checked as
// New checks Config.Services (and failing, with nothing changed, as New
// would). A service new to the list starts delivering at once. A removed
// one stops: a PUT in flight may finish until ctx ends, then it is
// cancelled, and its lease is released; its stored work is kept, shown as
// UNCONFIGURED, until it is configured again or purged. A service whose
// registration changed keeps its state and queue: its URL and hs_token
// apply from its next PUT (stored transactions keep their bytes), its
// namespaces to the next Enqueue call, and its opt-ins to the next
// transaction formed.
//
// Enqueue calls during an update are routed by the old list or the new one,
// never a mix; an item routed to a service that the update removes is
// stored for it, kept as UNCONFIGURED. UpdateServices returns once every
// removed service has stopped, or ctx.Err() if ctx ends first (they stop
// all the same, and a later UpdateServices that adds one back waits for
// it). After Stop it returns ErrStopped.
func (s *Scheduler) UpdateServices(ctx context.Context, regs []*Registration) error {
	if err := checkServices(regs); err != nil {
		return err
	}
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	s.mu.Lock()
	state, g := s.state, s.group
	s.mu.Unlock()
	if state == stateStopped {
		return ErrStopped
	}
	// A service added back must not run beside its old deliverer.
	for _, reg := range regs {
		if old := s.reload.retiring[reg.ID]; old != nil {
			select {
			case <-old.ended:
				delete(s.reload.retiring, reg.ID)
			case <-ctx.Done():
				return fmt.Errorf("error adding service %q back: its removed sender has not stopped yet: %w", reg.ID, ctx.Err())
			}
		}
	}
	old := s.current()
	next, created := s.newRoster(regs, old)
	if g != nil && len(created) > 0 {
		backlogs, err := s.cfg.Store.Backlogs(ctx)
		if err != nil {
			return fmt.Errorf("error reading the store: %w", err)
		}
		for _, b := range backlogs {
			if d := next.deliverers[b.Service]; d != nil && slices.Contains(created, d) {
				d.queued.Store(int64(b.Queued))
			}
		}
	}
	s.roster.Store(next)
	for _, d := range created {
		s.log.Info("application service added", "service", d.id)
		if g != nil {
			launch(g, d)
		}
	}
	var removed []*deliverer
	for id, d := range old.deliverers {
		if next.deliverers[id] == nil {
			s.log.Info("application service removed; its stored work is kept until purged", "service", id)
			close(d.retired)
			removed = append(removed, d)
		}
	}
	for i, d := range removed {
		if g == nil {
			continue // never launched
		}
		select {
		case <-d.ended:
		case <-ctx.Done():
			for _, d := range removed[i:] {
				s.reload.retiring[d.id] = d
			}
			return fmt.Errorf("error waiting for removed services to stop: %w", ctx.Err())
		}
	}
	return nil
}

// isRetiring reports whether a removed deliverer of id may still run.
func (s *Scheduler) isRetiring(id string) bool {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	d := s.reload.retiring[id]
	if d == nil {
		return false
	}
	select {
	case <-d.ended:
		delete(s.reload.retiring, id)
		return false
	default:
		return true
	}
}
