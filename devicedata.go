package scheduler

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// DeviceListChanges is a summary of device-list changes for application
// services that opted in to MSC3202 (org.matrix.msc3202): the users whose
// device lists changed, and the users the services need no longer track
// (they left every encrypted room they shared). It reaches each service
// that is interested in the user, or, through UserRooms, in a room the
// user is joined to, as Synapse decides; each service receives only its
// users. Interest is decided when the summary is enqueued: for a user in
// Left whose rooms UserRooms no longer reports, that leaves the services
// interested in the user themselves.
//
// The summaries a service is owed are merged into each transaction under
// "org.matrix.msc3202.device_lists", a later summary winning: a user in a
// later Left moves from "changed" to "left", and the other way round.
type DeviceListChanges struct {
	// Changed lists the user IDs whose device lists changed.
	Changed []string
	// Left lists the user IDs the services need no longer track. A user
	// may not be in both lists.
	Left []string
}

// validate checks that every user ID looks like one and that no user is
// in both lists.
func (c *DeviceListChanges) validate() error {
	fail := func(reason string) error {
		return &InvalidInputError{Err: ErrInvalidDeviceLists, Reason: reason}
	}
	changed := make(map[string]struct{}, len(c.Changed))
	for i, u := range c.Changed {
		if !isUserID(u) {
			return fail(fmt.Sprintf("DeviceListChanges.Changed[%d] %s is not a user ID (@localpart:server)", i, quoteShort(u)))
		}
		changed[u] = struct{}{}
	}
	for i, u := range c.Left {
		if !isUserID(u) {
			return fail(fmt.Sprintf("DeviceListChanges.Left[%d] %s is not a user ID (@localpart:server)", i, quoteShort(u)))
		}
		if _, ok := changed[u]; ok {
			return fail(fmt.Sprintf("%s is in both Changed and Left: say which holds now", quoteShort(u)))
		}
	}
	return nil
}

// DeviceKeyCounts is the state of the end-to-end encryption keys of one
// device of a user, for the application services that opted in to MSC3202
// (org.matrix.msc3202) and are interested in the user (users namespace or
// own user, as Synapse counts keys only for the services' own users). The
// ones a service is owed are merged into each transaction per user and
// device, a later one winning for each of its two parts, and sent under
// "org.matrix.msc3202.device_one_time_key_counts" and its other spelling
// "org.matrix.msc3202.device_one_time_keys_count" ({user: {device:
// {algorithm: count}}}), and "org.matrix.msc3202.device_unused_fallback_key_types"
// ({user: {device: [algorithm]}}).
type DeviceKeyCounts struct {
	// UserID is the user whose device it is.
	UserID string
	// DeviceID is the device.
	DeviceID string
	// OneTimeKeyCounts counts the device's unclaimed one-time keys by
	// algorithm, such as {"signed_curve25519": 50}. Nil says nothing about
	// them (an earlier value stands); an empty map says there are none.
	OneTimeKeyCounts map[string]int
	// UnusedFallbackKeyTypes lists the algorithms of the device's unused
	// fallback keys. Nil says nothing about them; an empty list says there
	// are none. At least one of the two fields must be non-nil.
	UnusedFallbackKeyTypes []string
}

// validate checks that c says something about a device of a user.
func (c *DeviceKeyCounts) validate(index int) error {
	fail := func(reason string) error {
		return &InvalidInputError{Err: ErrInvalidKeyCounts, Index: index, Reason: reason}
	}
	switch {
	case !isUserID(c.UserID):
		return fail(fmt.Sprintf("DeviceKeyCounts.UserID %s is not a user ID (@localpart:server)", quoteShort(c.UserID)))
	case c.DeviceID == "" || !utf8.ValidString(c.DeviceID):
		return fail("DeviceKeyCounts.DeviceID is empty or not valid UTF-8")
	case c.OneTimeKeyCounts == nil && c.UnusedFallbackKeyTypes == nil:
		return fail("both OneTimeKeyCounts and UnusedFallbackKeyTypes are nil: set at least one (empty means none)")
	}
	for alg, n := range c.OneTimeKeyCounts {
		if alg == "" || !utf8.ValidString(alg) {
			return fail("DeviceKeyCounts.OneTimeKeyCounts has an empty or invalid algorithm name")
		}
		if n < 0 {
			return fail(fmt.Sprintf("DeviceKeyCounts.OneTimeKeyCounts[%s] is negative (%d)", quoteShort(alg), n))
		}
	}
	for i, alg := range c.UnusedFallbackKeyTypes {
		if alg == "" || !utf8.ValidString(alg) {
			return fail(fmt.Sprintf("DeviceKeyCounts.UnusedFallbackKeyTypes[%d] is empty or not valid UTF-8", i))
		}
	}
	return nil
}

// deviceListBatch is EnqueueDeviceLists's batch: the users of interest
// to each service that opted in, stored per service (see routeDeviceLists).
func (s *Scheduler) deviceListBatch(changes DeviceListChanges) batch {
	return batch{
		what: "device-list changes", counted: "users in device-list changes",
		n:        len(changes.Changed) + len(changes.Left),
		checks:   allAfter,
		validate: func() (int, error) { return 0, changes.validate() },
		route: func(ctx context.Context, rooms *interest.Rooms) ([]store.Entry, error) {
			return s.routeDeviceLists(ctx, rooms, changes)
		},
	}
}

// routeDeviceLists returns the entries of changes: for each service that
// opted in to MSC3202, the users it is interested in, in parts that fit
// a transaction, one entry for the services owed the same part.
func (s *Scheduler) routeDeviceLists(ctx context.Context, rooms *interest.Rooms, changes DeviceListChanges) ([]store.Entry, error) {
	var entries []store.Entry
	byData := make(map[string]int) // data → its entry
	for _, m := range s.sorter().services {
		if m.OptIns&interest.DeviceData == 0 {
			continue
		}
		changed, err := rooms.UsersOfInterest(ctx, m, changes.Changed)
		if err != nil {
			return nil, fmt.Errorf("error deciding interest in device-list changes: %w", err)
		}
		left, err := rooms.UsersOfInterest(ctx, m, changes.Left)
		if err != nil {
			return nil, fmt.Errorf("error deciding interest in device-list changes: %w", err)
		}
		if len(changed)+len(left) == 0 {
			continue
		}
		for _, data := range s.splitDeviceLists(changed, left) {
			if len(data) > s.cfg.MaxTxnBytes {
				return nil, &InvalidInputError{Err: ErrInvalidDeviceLists,
					Reason: fmt.Sprintf("one user ID takes %d bytes, more than Config.MaxTxnBytes (%d)", len(data), s.cfg.MaxTxnBytes)}
			}
			if i, ok := byData[string(data)]; ok {
				entries[i].Services = append(entries[i].Services, m.ID)
				continue
			}
			byData[string(data)] = len(entries)
			entries = append(entries, store.Entry{
				Item:     store.Item{Kind: store.KindDeviceLists, Data: data},
				Services: []string{m.ID},
			})
		}
	}
	return entries, nil
}

// splitDeviceLists encodes the changes, in parts of at most
// Config.MaxTxnBytes each when they are larger; a part of one user may
// still be larger. Parts merge to the whole, since no user is in both
// lists.
func (s *Scheduler) splitDeviceLists(changed, left []string) [][]byte {
	data := wire.EncodeDeviceLists(changed, left)
	if len(data) <= s.cfg.MaxTxnBytes || len(changed)+len(left) <= 1 {
		return [][]byte{data}
	}
	// Halve the users, changed ones first, and split each half again.
	half := (len(changed) + len(left)) / 2
	c1, c2 := changed[:min(half, len(changed))], changed[min(half, len(changed)):]
	l1, l2 := left[:half-len(c1)], left[half-len(c1):]
	return append(s.splitDeviceLists(c1, l1), s.splitDeviceLists(c2, l2)...)
}

// stored returns c in the form the services receive.
func (c *DeviceKeyCounts) stored(index, maxBytes int) (store.Item, error) {
	data := wire.EncodeKeyCounts(c.UserID, c.DeviceID, c.OneTimeKeyCounts, c.UnusedFallbackKeyTypes)
	return store.Item{Kind: store.KindKeyCounts, Data: data}, checkItemSize(ErrInvalidKeyCounts, index, len(data), maxBytes)
}

// wants returns the services that opted in to MSC3202 and are interested
// in c's user.
func (c *DeviceKeyCounts) wants(_ context.Context, es *eventSorter, _ *interest.Rooms, _ int, dst []string) ([]string, error) {
	return es.services.WantUser(interest.DeviceData, c.UserID, dst), nil
}
