package interest

import (
	"context"
	"fmt"
)

// Directory answers for a room on this homeserver: the method set of the
// root package's RoomDirectory.
type Directory interface {
	// LocalAliases returns the room's aliases on this homeserver.
	LocalAliases(ctx context.Context, roomID string) ([]string, error)
	// LocalMembers returns the user IDs of the room's joined members on
	// this homeserver.
	LocalMembers(ctx context.Context, roomID string) ([]string, error)
}

// Rooms decides interest in rooms and users through a Directory, caching
// its answers for the duration of one Enqueue call, so that each room, and
// each user, is looked up at most once per call. Its zero value has no
// Directory: then only namespaces and own users decide.
type Rooms struct {
	dir     Directory
	users   UserRooms // dir, if it implements UserRooms
	aliases map[string][]string
	members map[string][]string
	joined  map[string][]string // user ID → the rooms it is joined to
}

// NewRooms returns an empty cache in front of dir, which may be nil.
func NewRooms(dir Directory) *Rooms {
	ri := &Rooms{dir: dir}
	ri.users, _ = dir.(UserRooms)
	return ri
}

// lookup returns get(id) from cache, asking get and filling the cache the
// first time; what names the answer in the error ("the local aliases of
// room").
func (ri *Rooms) lookup(ctx context.Context, cache *map[string][]string, id string,
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

// WantsRoom reports whether m is interested in the room, as Synapse's
// is_interested_in_room decides: its rooms namespace matches the room ID,
// or, through the Directory, its aliases namespace one of the room's
// local aliases, or its users namespace (or its own user) one of the
// room's local members.
func (ri *Rooms) WantsRoom(ctx context.Context, m *Service, roomID string) (bool, error) {
	if matchesAny(m.Rooms, roomID) {
		return true, nil
	}
	if ri.dir == nil {
		return false, nil
	}
	if len(m.Aliases) > 0 {
		aliases, err := ri.lookup(ctx, &ri.aliases, roomID, ri.dir.LocalAliases, "the local aliases of room")
		if err != nil {
			return false, err
		}
		if anyMatches(aliases, func(a string) bool { return matchesAny(m.Aliases, a) }) {
			return true, nil
		}
	}
	members, err := ri.lookup(ctx, &ri.members, roomID, ri.dir.LocalMembers, "the local members of room")
	if err != nil {
		return false, err
	}
	return anyMatches(members, m.wantsUser), nil
}

// UserRooms answers for a user: the method set of the root package's
// UserRooms, an optional extension of a Directory.
type UserRooms interface {
	// JoinedRooms returns the IDs of the rooms the user is joined to.
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
}

// WantsUserOrRooms reports whether m is interested in the user or, through
// UserRooms, in one of the rooms the user is joined to: Synapse's
// is_interested_in_presence, and its test for device-list changes
// (_is_appservice_interested_in_device_lists_of_user).
func (ri *Rooms) WantsUserOrRooms(ctx context.Context, m *Service, userID string) (bool, error) {
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
		if ok, err := ri.WantsRoom(ctx, m, room); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// UsersOfInterest returns the users of list that m is interested in (see
// WantsUserOrRooms), in list's order.
func (ri *Rooms) UsersOfInterest(ctx context.Context, m *Service, list []string) ([]string, error) {
	var out []string
	for _, u := range list {
		ok, err := ri.WantsUserOrRooms(ctx, m, u)
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
