package scheduler

import (
	"log/slog"
)

// warnMissingHooks logs, at WARN, the interest that regs need and rooms
// (Config.Rooms) cannot decide, so that an integrator who left the hook
// out learns why a bridge misses events: without a RoomDirectory, a
// service's users and aliases namespaces match only what an event names
// itself (its sender, the state_key of a membership, the room ID), never
// the other users' messages in a room a bridged user is in; without
// UserRooms, presence and device-list changes reach a service only for
// users in its own namespaces.
func warnMissingHooks(log *slog.Logger, rooms RoomDirectory, regs []*Registration) {
	var byMembership, byUserRooms []string
	for _, r := range regs {
		if r.URL == "" {
			continue // url: null receives nothing
		}
		if rooms == nil && (len(r.Namespaces.Users) > 0 || len(r.Namespaces.Aliases) > 0) {
			byMembership = append(byMembership, r.ID)
		}
		if r.ReceiveEphemeral || r.PushEphemeral || r.MSC3202 {
			byUserRooms = append(byUserRooms, r.ID)
		}
	}
	if len(byMembership) > 0 {
		log.Warn("Config.Rooms is nil: interest by room membership and by room alias is off, so these services "+
			"get only events whose sender, state_key or room ID their namespaces match, not other users' "+
			"messages in the rooms they bridge; set Config.Rooms (a RoomDirectory) to decide it as Synapse does",
			"services", byMembership)
	}
	if _, ok := rooms.(UserRooms); !ok && len(byUserRooms) > 0 {
		log.Warn("Config.Rooms does not implement UserRooms: presence and device-list changes reach these "+
			"services only for users in their own namespaces, not for users who share a room with them "+
			"(encrypting bridges then miss new devices)", "services", byUserRooms)
	}
}
