package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/asdeliver/scheduler/internal/clock"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/store"
)

// eventSorter decides which services want an event (once, in Enqueue, before
// the commit: the answer is stored with the event and never recomputed).
// The rules are package interest's; it holds them for the configured
// services. Its ticker, which finds work this process was not told about,
// is the poller below.
type eventSorter struct {
	services interest.Services // services with a URL; the others receive nothing
	rooms    RoomDirectory
}

func newEventSorter(serverName string, regs []*Registration, rooms RoomDirectory) *eventSorter {
	es := &eventSorter{rooms: rooms}
	for _, r := range regs {
		if r.URL == "" {
			continue
		}
		var opts interest.OptIn
		if r.ReceiveEphemeral || r.PushEphemeral {
			opts |= interest.Ephemeral
		}
		if r.MSC3202 {
			opts |= interest.DeviceData
		}
		es.services = append(es.services, &interest.Service{
			ID:      r.ID,
			UserID:  r.UserID(serverName),
			Users:   patterns(r.Namespaces.Users),
			Aliases: patterns(r.Namespaces.Aliases),
			Rooms:   patterns(r.Namespaces.Rooms),
			OptIns:  opts,
		})
	}
	return es
}

// patterns returns the compiled regexes of ns; one that is not compiled
// matches nothing.
func patterns(ns []Namespace) []interest.Pattern {
	ps := make([]interest.Pattern, len(ns))
	for i := range ns {
		if ns[i].re != nil {
			ps[i] = *ns[i].re
		}
	}
	return ps
}

// lookups returns what answers, for one Enqueue call, the questions about
// rooms and users that the Config.Rooms directory answers.
func (es *eventSorter) lookups() *interest.Rooms {
	return interest.NewRooms(es.rooms)
}

// interested returns the IDs of the services that want ev, appending to dst:
// Synapse's is_interested_in_event.
func (es *eventSorter) interested(ctx context.Context, ev *Event, ri *interest.Rooms, dst []string) ([]string, error) {
	return es.services.WantEvent(ctx, &interest.Event{RoomID: ev.RoomID, Sender: ev.Sender, Type: ev.Type, StateKey: ev.StateKey}, ri, dst)
}

// ephemeralInterest returns the IDs of the services that want ev, appending
// to dst: those that opted in to ephemeral events and are interested in
// the room of a typing notification or read receipt, or in the user of a
// presence update.
func (es *eventSorter) ephemeralInterest(ctx context.Context, ev *EphemeralEvent, ri *interest.Rooms, dst []string) ([]string, error) {
	if ev.Type == typePresence {
		return es.services.WantUserOrRooms(ctx, interest.Ephemeral, ev.UserID, ri, dst)
	}
	return es.services.WantRoom(ctx, interest.Ephemeral, ev.RoomID, ri, dst)
}

// poller is the EventSorter's ticker: every interval it asks the Store
// which services have pending work and wakes their deliverers, so work
// left by a restart or appended by another process is found. It warns
// once about work stored for a service that is not configured.
type poller struct {
	store     store.Store
	clock     clock.Clock
	interval  time.Duration
	log       *slog.Logger
	deliverer func(id string) *deliverer // of a configured service, or nil
}

// run polls until stopping closes or ctx ends.
func (p *poller) run(ctx context.Context, stopping <-chan struct{}) {
	warned := make(map[string]bool)
	for {
		t := p.clock.NewTimer(p.interval)
		select {
		case <-stopping:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		backlogs, err := p.store.Backlogs(ctx)
		if err != nil {
			p.log.Warn("error polling the store for pending work", "error", err)
			continue
		}
		for _, b := range backlogs {
			if d := p.deliverer(b.Service); d != nil {
				d.queued.Store(int64(b.Queued))
				d.wake()
				continue
			}
			if !warned[b.Service] {
				warned[b.Service] = true
				p.log.Warn("the store holds work for a service that is not configured; it is kept until purged",
					"service", b.Service, "txns", b.Txns, "queued", b.Queued)
			}
		}
	}
}

// backlogOf returns the Backlog of one service from the Store, zero when
// nothing is pending.
func backlogOf(ctx context.Context, st store.Store, service string) (store.Backlog, error) {
	all, err := st.Backlogs(ctx)
	if err != nil {
		return store.Backlog{}, err
	}
	for _, b := range all {
		if b.Service == service {
			return b, nil
		}
	}
	return store.Backlog{Service: service}, nil
}
