package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// ServiceState is whether deliveries to an application service succeed.
type ServiceState string

// The states of a service.
const (
	// StateUp: the last delivery succeeded, or none failed yet; new events
	// are sent at once.
	StateUp ServiceState = "UP"
	// StateDown: a delivery failed; the scheduler retries with backoff.
	StateDown ServiceState = "DOWN"
	// StateUnconfigured: the Store holds work for a service that is not in
	// Config.Services (or has no URL); nothing is sent until it is
	// configured again or purged.
	StateUnconfigured ServiceState = "UNCONFIGURED"
)

// ServiceStatus is an operator's view of one application service.
type ServiceStatus struct {
	// ID is the service's registration ID.
	ID string
	// State is UP, DOWN or UNCONFIGURED.
	State ServiceState
	// StoredTxns counts transactions formed and not yet delivered.
	StoredTxns int
	// QueuedEvents counts items waiting to be put in a transaction: events,
	// and ephemeral events, to-device messages and device data.
	QueuedEvents int
	// OldestWaiting is the age of the oldest undelivered event; zero when
	// nothing waits.
	OldestWaiting time.Duration
	// Delivered counts items (events and the rest) delivered since Start.
	Delivered int64
	// LastSuccess is when a transaction was last delivered since Start.
	LastSuccess time.Time
	// LastError describes the last failed delivery since Start, "" if none.
	LastError string
	// LastHTTPStatus is the HTTP status of the AS's last answer, 0 if none.
	LastHTTPStatus int
	// LastAnswer is a short excerpt of the AS's last answer, tokens
	// redacted.
	LastAnswer string
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int
	// NextRetry is when the next attempt is due while DOWN; zero when UP.
	NextRetry time.Time
	// Dropped counts the items not queued for the service since Start
	// because it was DOWN with a full queue (Config.MaxQueuedPerService); other
	// services got them. Always 0 without that cap.
	Dropped int64
}

// Status reports on the service serviceID: its state, what the Store holds
// for it and how its last deliveries went. It reads the Store, so it works
// before Start and after Stop too (the in-memory part is then empty). It
// returns ErrUnknownService for an ID that is neither configured with a URL
// nor has work stored (a registration with url: null is never delivered to,
// so nothing is stored for it).
func (s *Scheduler) Status(ctx context.Context, serviceID string) (ServiceStatus, error) {
	b, err := backlogOf(ctx, s.cfg.Store, serviceID)
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("error reading the store: %w", err)
	}
	d := s.deliverer(serviceID)
	if d == nil && b.Txns == 0 && b.Queued == 0 {
		return ServiceStatus{}, fmt.Errorf("%w: %q", ErrUnknownService, serviceID)
	}
	return s.statusOf(serviceID, b, d), nil
}

// Statuses reports on every service that is configured with a URL or has
// work stored (UNCONFIGURED then), as Status does, sorted by ID. It reads
// the Store once.
func (s *Scheduler) Statuses(ctx context.Context) ([]ServiceStatus, error) {
	backlogs, err := s.cfg.Store.Backlogs(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading the store: %w", err)
	}
	byID := make(map[string]store.Backlog, len(backlogs))
	for _, b := range backlogs {
		byID[b.Service] = b
	}
	deliverers := s.current().deliverers
	ids := make([]string, 0, len(byID)+len(deliverers))
	for id := range deliverers {
		ids = append(ids, id)
	}
	for id := range byID {
		if deliverers[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := make([]ServiceStatus, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.statusOf(id, byID[id], deliverers[id]))
	}
	return out, nil
}

// statusOf builds the status of service id from its backlog b and its
// deliverer d, nil when it is not configured.
func (s *Scheduler) statusOf(id string, b store.Backlog, d *deliverer) ServiceStatus {
	st := ServiceStatus{ID: id, StoredTxns: b.Txns, QueuedEvents: b.Queued}
	if !b.Oldest.IsZero() {
		st.OldestWaiting = s.clock.Now().Sub(b.Oldest)
	}
	if d == nil {
		st.State = StateUnconfigured
		return st
	}
	snap := d.snapshot()
	st.State = StateUp
	if snap.down {
		st.State = StateDown
		st.NextRetry = snap.nextRetry
	}
	st.Delivered = snap.delivered
	st.LastSuccess = snap.lastSuccess
	st.LastError = snap.lastError
	st.LastHTTPStatus = snap.lastHTTP
	st.LastAnswer = snap.lastAnswer
	st.ConsecutiveFailures = snap.failures
	st.Dropped = d.dropped.Load()
	return st
}

// Purge deletes everything the Store holds for serviceID: stored
// transactions and queued events. It is for work left behind by a service
// that was removed from Config.Services; a configured service cannot be
// purged (remove it from the configuration first). It fails while another
// process holds the service's lease.
func (s *Scheduler) Purge(ctx context.Context, serviceID string) error {
	if s.deliverer(serviceID) != nil {
		return fmt.Errorf("service %q is configured: remove it from Config.Services (or UpdateServices) before purging its work", serviceID)
	}
	if s.isRetiring(serviceID) {
		return fmt.Errorf("service %q was removed but its sender has not stopped yet: try again", serviceID)
	}
	st := s.cfg.Store
	epoch, err := st.Claim(ctx, serviceID, s.owner, s.cfg.LeaseTTL)
	if err != nil {
		if errors.Is(err, store.ErrLeaseHeld) {
			return fmt.Errorf("error purging %q: another process is delivering to it: %w", serviceID, err)
		}
		return fmt.Errorf("error purging %q: %w", serviceID, err)
	}
	defer func() {
		_ = st.Release(context.WithoutCancel(ctx), serviceID, epoch)
	}()
	if err := st.Purge(ctx, serviceID, epoch); err != nil {
		return fmt.Errorf("error purging %q: %w", serviceID, err)
	}
	s.log.Warn("purged all stored work of an unconfigured service", "service", serviceID)
	return nil
}
