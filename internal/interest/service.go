package interest

import "context"

// OptIn is a set of what a service opted in to beyond room events.
type OptIn uint8

// What a service may opt in to, as Synapse reads its registration.
const (
	// Ephemeral is ephemeral events and to-device messages
	// (receive_ephemeral or de.sorunome.msc2409.push_ephemeral).
	Ephemeral OptIn = 1 << iota
	// DeviceData is MSC3202 device-list changes and key counts
	// (org.matrix.msc3202).
	DeviceData
)

// Service is the interest rules of one application service.
type Service struct {
	// ID is the service's registration id, which the deciding methods
	// return.
	ID string
	// UserID is the service's own user, @sender_localpart:server: the
	// service is interested in it as in its users namespace.
	UserID string
	// Users, Aliases and Rooms are the regexes of its namespaces.
	Users, Aliases, Rooms []Pattern
	// OptIns is what it opted in to beyond room events.
	OptIns OptIn
}

// wantsUser reports whether user is the service's own user or in its users
// namespace.
func (m *Service) wantsUser(user string) bool {
	return user == m.UserID || matchesAny(m.Users, user)
}

// Event is what decides interest in a room event.
type Event struct {
	// RoomID, Sender and Type are the event's room_id, sender and type.
	RoomID, Sender, Type string
	// StateKey is the event's state_key, nil when it has none; that of an
	// m.room.member event is the user whose membership it is.
	StateKey *string
}

// wantsFromEvent decides interest from the event alone: its sender, the
// target of a membership event, or its room ID.
func (m *Service) wantsFromEvent(ev *Event) bool {
	if m.wantsUser(ev.Sender) {
		return true
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && m.wantsUser(*ev.StateKey) {
		return true
	}
	return matchesAny(m.Rooms, ev.RoomID)
}

// Services decides interest over several services. Each method appends
// the IDs of the services that want what it is asked about to dst, in
// the order of the services, and returns it; an error is one of the
// Directory's, and nothing is appended then.
type Services []*Service

// WantEvent decides interest in a room event: Synapse's
// is_interested_in_event. rooms answers for the event's room when the
// event alone does not decide.
func (ss Services) WantEvent(ctx context.Context, ev *Event, rooms *Rooms, dst []string) ([]string, error) {
	for _, m := range ss {
		if m.wantsFromEvent(ev) {
			dst = append(dst, m.ID)
			continue
		}
		ok, err := rooms.WantsRoom(ctx, m, ev.RoomID)
		if err != nil {
			return nil, err
		}
		if ok {
			dst = append(dst, m.ID)
		}
	}
	return dst, nil
}

// WantRoom decides interest in the room roomID (see Rooms.WantsRoom) among
// the services that opted in to opt: who receives a typing notification
// or read receipt (Synapse's _handle_typing and _handle_receipts).
func (ss Services) WantRoom(ctx context.Context, opt OptIn, roomID string, rooms *Rooms, dst []string) ([]string, error) {
	return ss.want(ctx, opt, dst, func(m *Service) (bool, error) { return rooms.WantsRoom(ctx, m, roomID) })
}

// WantUserOrRooms decides interest in the user userID or the rooms it is
// joined to (see Rooms.WantsUserOrRooms) among the services that opted in
// to opt: who receives a presence update (Synapse's _handle_presence).
func (ss Services) WantUserOrRooms(ctx context.Context, opt OptIn, userID string, rooms *Rooms, dst []string) ([]string, error) {
	return ss.want(ctx, opt, dst, func(m *Service) (bool, error) { return rooms.WantsUserOrRooms(ctx, m, userID) })
}

func (ss Services) want(ctx context.Context, opt OptIn, dst []string, wants func(*Service) (bool, error)) ([]string, error) {
	for _, m := range ss {
		if m.OptIns&opt == 0 {
			continue
		}
		ok, err := wants(m)
		if err != nil {
			return nil, err
		}
		if ok {
			dst = append(dst, m.ID)
		}
	}
	return dst, nil
}

// WantUser decides interest in the user userID itself (users namespace,
// exclusive or not, or own user) among the services that opted in to opt.
// Synapse sends a to-device message so (_get_to_device_messages:
// is_interested_in_user of the recipient), and counts the one-time keys
// of such users.
func (ss Services) WantUser(opt OptIn, userID string, dst []string) []string {
	for _, m := range ss {
		if m.OptIns&opt != 0 && m.wantsUser(userID) {
			dst = append(dst, m.ID)
		}
	}
	return dst
}
