package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// eventSorter decides which services want an event (once, in Enqueue, before
// the commit: the answer is stored with the event and never recomputed) and
// polls the Store for work this process was not told about.
type eventSorter struct {
	serverName string
	services   []*serviceMatcher // services with a URL; the others receive nothing
	rooms      RoomDirectory
}

// serviceMatcher is one service's interest rules.
type serviceMatcher struct {
	id      string
	userID  string // @sender_localpart:server, the AS's own user
	users   []Namespace
	aliases []Namespace
	rooms   []Namespace
}

func newEventSorter(serverName string, regs []*Registration, rooms RoomDirectory) *eventSorter {
	es := &eventSorter{serverName: serverName, rooms: rooms}
	for _, r := range regs {
		if r.URL == "" {
			continue
		}
		es.services = append(es.services, &serviceMatcher{
			id:      r.ID,
			userID:  r.UserID(serverName),
			users:   r.Namespaces.Users,
			aliases: r.Namespaces.Aliases,
			rooms:   r.Namespaces.Rooms,
		})
	}
	return es
}

func matchesAny(ns []Namespace, s string) bool {
	for i := range ns {
		if ns[i].matches(s) {
			return true
		}
	}
	return false
}

// wantsUser reports whether user is the service's own user or in its users
// namespace.
func (m *serviceMatcher) wantsUser(user string) bool {
	return user == m.userID || matchesAny(m.users, user)
}

// wantsFromEvent decides interest from the event alone: its sender, the
// target of a membership event, or its room ID.
func (m *serviceMatcher) wantsFromEvent(ev *Event) bool {
	if m.wantsUser(ev.Sender) {
		return true
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && m.wantsUser(*ev.StateKey) {
		return true
	}
	return matchesAny(m.rooms, ev.RoomID)
}

// roomInfo caches RoomDirectory answers for the duration of one Enqueue
// call, so each room is looked up at most once per call.
type roomInfo struct {
	dir     RoomDirectory
	aliases map[string][]string
	members map[string][]string
}

func (ri *roomInfo) lookup(ctx context.Context, cache *map[string][]string, roomID string,
	get func(context.Context, string) ([]string, error), what string) ([]string, error) {
	if v, ok := (*cache)[roomID]; ok {
		return v, nil
	}
	v, err := get(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("error looking up the %s of room %s: %w", what, roomID, err)
	}
	if *cache == nil {
		*cache = make(map[string][]string)
	}
	(*cache)[roomID] = v
	return v, nil
}

// interested returns the IDs of the services that want ev, appending to dst.
func (es *eventSorter) interested(ctx context.Context, ev *Event, ri *roomInfo, dst []string) ([]string, error) {
	for _, m := range es.services {
		if m.wantsFromEvent(ev) {
			dst = append(dst, m.id)
			continue
		}
		if ri.dir == nil {
			continue
		}
		if len(m.aliases) > 0 {
			aliases, err := ri.lookup(ctx, &ri.aliases, ev.RoomID, ri.dir.LocalAliases, "local aliases")
			if err != nil {
				return nil, err
			}
			if anyMatches(aliases, func(a string) bool { return matchesAny(m.aliases, a) }) {
				dst = append(dst, m.id)
				continue
			}
		}
		members, err := ri.lookup(ctx, &ri.members, ev.RoomID, ri.dir.LocalMembers, "local members")
		if err != nil {
			return nil, err
		}
		if anyMatches(members, m.wantsUser) {
			dst = append(dst, m.id)
		}
	}
	return dst, nil
}

func anyMatches(values []string, pred func(string) bool) bool {
	for _, v := range values {
		if pred(v) {
			return true
		}
	}
	return false
}

// poll runs until ctx ends or stopping closes: every interval it asks the
// Store which services have pending work and wakes their owners, and warns
// once about work stored for a service that is not configured.
func (s *Scheduler) poll(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	warned := make(map[string]bool)
	for {
		select {
		case <-s.stopping:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		backlogs, err := s.cfg.Store.Backlogs(ctx)
		if err != nil {
			s.log.Warn("error polling the store for pending work", "error", err)
			continue
		}
		for _, b := range backlogs {
			if svc := s.services[b.Service]; svc != nil {
				svc.wake()
				continue
			}
			if !warned[b.Service] {
				warned[b.Service] = true
				s.log.Warn("the store holds work for a service that is not configured; it is kept until purged",
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
