package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/asdeliver/scheduler/internal/clock"
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

	// What the service opted in to beyond room events, as Synapse reads
	// the registration: ephemeral events and to-device messages
	// (receive_ephemeral or de.sorunome.msc2409.push_ephemeral), MSC3202
	// device data (org.matrix.msc3202).
	ephemeral  bool
	deviceData bool
}

func newEventSorter(serverName string, regs []*Registration, rooms RoomDirectory) *eventSorter {
	es := &eventSorter{serverName: serverName, rooms: rooms}
	for _, r := range regs {
		if r.URL == "" {
			continue
		}
		es.services = append(es.services, &serviceMatcher{
			id:         r.ID,
			userID:     r.UserID(serverName),
			users:      r.Namespaces.Users,
			aliases:    r.Namespaces.Aliases,
			rooms:      r.Namespaces.Rooms,
			ephemeral:  r.ReceiveEphemeral || r.PushEphemeral,
			deviceData: r.MSC3202,
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

// roomInfo caches RoomDirectory (and UserRooms) answers for the duration
// of one Enqueue call, so each room, and each user, is looked up at most
// once per call.
type roomInfo struct {
	dir     RoomDirectory
	users   UserRooms // dir, if it implements UserRooms
	aliases map[string][]string
	members map[string][]string
	joined  map[string][]string // user ID → the rooms it is joined to
}

// newRoomInfo returns an empty cache in front of dir, which may be nil.
func newRoomInfo(dir RoomDirectory) *roomInfo {
	ri := &roomInfo{dir: dir}
	ri.users, _ = dir.(UserRooms)
	return ri
}

// lookup returns get(id) from cache, asking get and filling the cache the
// first time; what names the answer in the error ("the local aliases of
// room").
func (ri *roomInfo) lookup(ctx context.Context, cache *map[string][]string, id string,
	get func(context.Context, string) ([]string, error), what string) ([]string, error) {
	if v, ok := (*cache)[id]; ok {
		return v, nil
	}
	v, err := get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("error looking up %s %s: %w", what, id, err)
	}
	if *cache == nil {
		*cache = make(map[string][]string)
	}
	(*cache)[id] = v
	return v, nil
}

// interested returns the IDs of the services that want ev, appending to dst:
// Synapse's is_interested_in_event.
func (es *eventSorter) interested(ctx context.Context, ev *Event, ri *roomInfo, dst []string) ([]string, error) {
	for _, m := range es.services {
		if m.wantsFromEvent(ev) {
			dst = append(dst, m.id)
			continue
		}
		ok, err := ri.wantsRoom(ctx, m, ev.RoomID)
		if err != nil {
			return nil, err
		}
		if ok {
			dst = append(dst, m.id)
		}
	}
	return dst, nil
}

// wantsRoom reports whether m is interested in the room, as Synapse's
// is_interested_in_room decides: its rooms namespace matches the room ID,
// or, through the RoomDirectory, its aliases namespace one of the room's
// local aliases, or its users namespace (or its own user) one of the
// room's local members.
func (ri *roomInfo) wantsRoom(ctx context.Context, m *serviceMatcher, roomID string) (bool, error) {
	if matchesAny(m.rooms, roomID) {
		return true, nil
	}
	if ri.dir == nil {
		return false, nil
	}
	if len(m.aliases) > 0 {
		aliases, err := ri.lookup(ctx, &ri.aliases, roomID, ri.dir.LocalAliases, "the local aliases of room")
		if err != nil {
			return false, err
		}
		if anyMatches(aliases, func(a string) bool { return matchesAny(m.aliases, a) }) {
			return true, nil
		}
	}
	members, err := ri.lookup(ctx, &ri.members, roomID, ri.dir.LocalMembers, "the local members of room")
	if err != nil {
		return false, err
	}
	return anyMatches(members, m.wantsUser), nil
}

// wantsUserOrRooms reports whether m is interested in the user or, through
// UserRooms, in one of the rooms the user is joined to: Synapse's
// is_interested_in_presence, and its test for device-list changes
// (_is_appservice_interested_in_device_lists_of_user).
func (ri *roomInfo) wantsUserOrRooms(ctx context.Context, m *serviceMatcher, userID string) (bool, error) {
	if m.wantsUser(userID) {
		return true, nil
	}
	if ri.users == nil {
		return false, nil
	}
	rooms, err := ri.lookup(ctx, &ri.joined, userID, ri.users.JoinedRooms, "the joined rooms of user")
	if err != nil {
		return false, err
	}
	for _, room := range rooms {
		if ok, err := ri.wantsRoom(ctx, m, room); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// ephemeralInterest returns the IDs of the services that want ev, appending
// to dst: those that opted in to ephemeral events and are interested in
// the room of a typing notification or read receipt (Synapse's
// _handle_typing and _handle_receipts), or in the user of a presence
// update (_handle_presence).
func (es *eventSorter) ephemeralInterest(ctx context.Context, ev *EphemeralEvent, ri *roomInfo, dst []string) ([]string, error) {
	for _, m := range es.services {
		if !m.ephemeral {
			continue
		}
		var ok bool
		var err error
		if ev.Type == typePresence {
			ok, err = ri.wantsUserOrRooms(ctx, m, ev.UserID)
		} else {
			ok, err = ri.wantsRoom(ctx, m, ev.RoomID)
		}
		if err != nil {
			return nil, err
		}
		if ok {
			dst = append(dst, m.id)
		}
	}
	return dst, nil
}

// userInterest returns the IDs of the services that opted in (as optedIn
// says) and are interested in userID itself: its users namespace, exclusive
// or not, or its own user. Synapse sends a to-device message so
// (_get_to_device_messages: is_interested_in_user of the recipient), and
// counts the one-time keys of such users.
func (es *eventSorter) userInterest(userID string, optedIn func(*serviceMatcher) bool, dst []string) []string {
	for _, m := range es.services {
		if optedIn(m) && m.wantsUser(userID) {
			dst = append(dst, m.id)
		}
	}
	return dst
}

// wantsEphemeral and wantsDeviceData are the opt-ins userInterest takes.
func wantsEphemeral(m *serviceMatcher) bool  { return m.ephemeral }
func wantsDeviceData(m *serviceMatcher) bool { return m.deviceData }

// usersOfInterest returns the users of list that m is interested in (see
// wantsUserOrRooms), in list's order.
func (ri *roomInfo) usersOfInterest(ctx context.Context, m *serviceMatcher, list []string) ([]string, error) {
	var out []string
	for _, u := range list {
		ok, err := ri.wantsUserOrRooms(ctx, m, u)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, u)
		}
	}
	return out, nil
}

func anyMatches(values []string, pred func(string) bool) bool {
	for _, v := range values {
		if pred(v) {
			return true
		}
	}
	return false
}

// poller is the EventSorter's ticker: every interval it asks the Store
// which services have pending work and wakes their deliverers, so work
// left by a restart or appended by another process is found. It warns
// once about work stored for a service that is not configured.
type poller struct {
	store      store.Store
	clock      clock.Clock
	interval   time.Duration
	log        *slog.Logger
	deliverers map[string]*deliverer
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
			if d := p.deliverers[b.Service]; d != nil {
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
