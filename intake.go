package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/eventjson"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

// Per-transaction limits of what a transaction carries beyond room events
// (Config.MaxEventsPerTxn bounds those). Synapse sends at most 100
// ephemeral events and 100 to-device messages per transaction; the rest
// leaves at once in the following transactions. Config.MaxTxnBytes bounds
// all of it together.
const (
	// MaxEphemeralPerTxn is the most ephemeral events in one transaction.
	MaxEphemeralPerTxn = 100
	// MaxToDevicePerTxn is the most to-device messages in one transaction.
	MaxToDevicePerTxn = 100
	// MaxDeviceListsPerTxn is the most EnqueueDeviceLists summaries merged
	// into one transaction's device lists.
	MaxDeviceListsPerTxn = 100
	// MaxKeyCountsPerTxn is the most DeviceKeyCounts (one device each)
	// merged into one transaction.
	MaxKeyCountsPerTxn = 1000
)

// txnLimits returns the limits of every transaction the scheduler forms
// under cfg (whose defaults are filled).
func txnLimits(cfg Config) store.Limits {
	return store.Limits{
		MaxItems: cfg.MaxEventsPerTxn,
		MaxItemsByKind: map[store.Kind]int{
			store.KindEvent:       cfg.MaxEventsPerTxn,
			store.KindEphemeral:   MaxEphemeralPerTxn,
			store.KindToDevice:    MaxToDevicePerTxn,
			store.KindDeviceLists: MaxDeviceListsPerTxn,
			store.KindKeyCounts:   MaxKeyCountsPerTxn,
		},
		MaxBytes: cfg.MaxTxnBytes,
	}
}

// bodyFlags returns the body keys r opted in to, as Synapse's push_bulk
// reads the registration: receive_ephemeral puts ephemeral events under
// "ephemeral", de.sorunome.msc2409.push_ephemeral under
// "de.sorunome.msc2409.ephemeral", either of them brings to-device
// messages, and org.matrix.msc3202 the MSC3202 device data.
func bodyFlags(r *Registration) wire.Flags {
	var f wire.Flags
	if r.ReceiveEphemeral {
		f |= wire.EphemeralStable
	}
	if r.PushEphemeral {
		f |= wire.EphemeralUnstable
	}
	if r.ReceiveEphemeral || r.PushEphemeral {
		f |= wire.ToDevice
	}
	if r.MSC3202 {
		f |= wire.DeviceData
	}
	return f
}

// The ephemeral event types EnqueueEphemeral accepts.
const (
	typeTyping   = "m.typing"
	typeReceipt  = "m.receipt"
	typePresence = "m.presence"
)

// EphemeralEvent is an ephemeral event (EDU) for the application services
// that opted in to them (receive_ephemeral or
// de.sorunome.msc2409.push_ephemeral, MSC2409): a typing notification, a
// read receipt or a presence update, in the shape a client receives it and
// Synapse sends it to application services:
//
//	{"type":"m.typing","room_id":"!r:hs","content":{"user_ids":["@a:hs"]}}
//	{"type":"m.receipt","room_id":"!r:hs","content":{"$ev":{"m.read":{"@a:hs":{"ts":1}}}}}
//	{"type":"m.presence","sender":"@a:hs","content":{"presence":"online"}}
//
// Type, RoomID and UserID repeat what Raw says: the scheduler reads them
// to decide which services want the event and sends Raw verbatim. Build it
// with ParseEphemeralEvent, or fill the fields yourself; EnqueueEphemeral
// checks that they agree with Raw.
type EphemeralEvent struct {
	// Type is the event's type: "m.typing", "m.receipt" or "m.presence".
	Type string
	// RoomID is the room_id of a typing notification or read receipt, and
	// empty for presence.
	RoomID string
	// UserID is the sender of a presence update, the user whose presence
	// it is, and empty for the other types.
	UserID string
	// Raw is the whole event, a JSON object with a "content" object, sent
	// to the application services verbatim. It must be valid JSON and
	// valid UTF-8. Leave out what a service may not see, such as other
	// users' private read receipts (m.read.private). Do not modify it once
	// the EphemeralEvent is passed to EnqueueEphemeral.
	Raw json.RawMessage
}

// ParseEphemeralEvent reads the fields of an EphemeralEvent from raw: a
// JSON object with a string "type" of "m.typing", "m.receipt" or
// "m.presence", a non-empty string "room_id" (typing and receipts) or
// "sender" (presence), and a "content" object. The whole of raw must be
// valid JSON and valid UTF-8, and may not have one of type, room_id or
// sender twice.
//
// EphemeralEvent.Raw is a copy of raw; the caller may reuse raw. Every
// error is an *InvalidInputError with Index 0, matching
// ErrInvalidEphemeral.
func ParseEphemeralEvent(raw []byte) (EphemeralEvent, error) {
	typ, room, sender, reason := scanEphemeral(raw)
	if reason != "" {
		return EphemeralEvent{}, &InvalidInputError{Err: ErrInvalidEphemeral, Reason: reason}
	}
	ev := EphemeralEvent{Type: typ, Raw: append(json.RawMessage(nil), raw...)}
	if typ == typePresence {
		ev.UserID = sender
	} else {
		ev.RoomID = room
	}
	return ev, nil
}

// scanEphemeral checks raw as ParseEphemeralEvent documents and returns its
// type, room_id (typing, receipts) and sender (presence), or why not.
func scanEphemeral(raw []byte) (typ, room, sender, reason string) {
	var f eventjson.Fields
	if err := eventjson.Scan(raw, &f); err != nil {
		return "", "", "", err.Error()
	}
	whole := string(raw)
	str := func(k eventjson.Key) (string, string) {
		s, err := f.Required(whole, k)
		if err != nil {
			return "", err.Error()
		}
		return s, ""
	}
	if typ, reason = str(eventjson.Type); reason != "" {
		return "", "", "", reason
	}
	switch typ {
	case typeTyping, typeReceipt:
		room, reason = str(eventjson.RoomID)
	case typePresence:
		sender, reason = str(eventjson.Sender)
		if reason == "" && !isUserID(sender) {
			reason = fmt.Sprintf("sender %s is not a user ID (@localpart:server)", quoteShort(sender))
		}
	default:
		reason = fmt.Sprintf("type %s is not an ephemeral event type application services receive: "+
			"use m.typing, m.receipt or m.presence", quoteShort(typ))
	}
	if reason != "" {
		return "", "", "", reason
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return "", "", "", err.Error()
	}
	if c, ok := top["content"]; !ok || len(c) == 0 || c[0] != '{' {
		return "", "", "", "missing content, or content is not a JSON object"
	}
	return typ, room, sender, ""
}

// validate checks that e can be enqueued: a known Type, RoomID set exactly
// for typing and receipts and UserID exactly for presence, and Raw as
// ParseEphemeralEvent requires it, agreeing with the fields.
func (e *EphemeralEvent) validate(index int) error {
	fail := func(reason string) error {
		return &InvalidInputError{Err: ErrInvalidEphemeral, Index: index, Reason: reason}
	}
	switch e.Type {
	case typeTyping, typeReceipt:
		if e.RoomID == "" {
			return fail("EphemeralEvent.RoomID is empty: a " + e.Type + " event needs its room_id")
		}
		if e.UserID != "" {
			return fail("EphemeralEvent.UserID is set: it is for m.presence only")
		}
	case typePresence:
		if e.UserID == "" {
			return fail("EphemeralEvent.UserID is empty: an m.presence event needs its sender")
		}
		if e.RoomID != "" {
			return fail("EphemeralEvent.RoomID is set: it is for m.typing and m.receipt only")
		}
	default:
		return fail(fmt.Sprintf("EphemeralEvent.Type %s is not m.typing, m.receipt or m.presence", quoteShort(e.Type)))
	}
	if len(e.Raw) == 0 {
		return fail("EphemeralEvent.Raw is empty: it must hold the whole event as a JSON object")
	}
	typ, room, sender, reason := scanEphemeral(e.Raw)
	switch {
	case reason != "":
		return fail("EphemeralEvent.Raw: " + reason)
	case typ != e.Type:
		return fail(fmt.Sprintf("type in EphemeralEvent.Raw is %s but EphemeralEvent.Type says %s", quoteShort(typ), quoteShort(e.Type)))
	case room != e.RoomID:
		return fail(fmt.Sprintf("room_id in EphemeralEvent.Raw is %s but EphemeralEvent.RoomID says %s", quoteShort(room), quoteShort(e.RoomID)))
	case sender != e.UserID:
		return fail(fmt.Sprintf("sender in EphemeralEvent.Raw is %s but EphemeralEvent.UserID says %s", quoteShort(sender), quoteShort(e.UserID)))
	}
	return nil
}

// ToDeviceMessage is a to-device message (MSC4203, sent under MSC2409's
// name) for one device of a user: delivered to the application services
// that opted in to ephemeral events and whose users namespace (exclusive or
// not) holds the recipient, or whose own user it is, as Synapse does. The
// service receives
//
//	{"to_user_id":…,"to_device_id":…,"type":…,"sender":…,"content":{…}}
//
// built when the message is enqueued.
type ToDeviceMessage struct {
	// Sender is the user ID of the sender.
	Sender string
	// Type is the message's event type, such as "m.room.encrypted".
	Type string
	// ToUserID is the user ID of the recipient.
	ToUserID string
	// ToDeviceID is the recipient's device ID. Expand "*" (all devices)
	// into one message per device first: an application service receives
	// concrete device IDs.
	ToDeviceID string
	// MessageID optionally identifies the message among the messages to
	// its recipient device, such as the position of the message in the
	// homeserver's device inbox stream. When it is set, a message with the
	// same ToUserID, ToDeviceID and MessageID that is still pending for a
	// service is not queued again for it, so a homeserver may replay its
	// to-device stream after a crash. Messages without one are never
	// deduplicated. It is not sent to the service.
	MessageID string
	// Content is the message's content: a JSON object in valid UTF-8,
	// sent verbatim.
	Content json.RawMessage
}

// validate checks that m can be enqueued: every field but MessageID
// non-empty, the user IDs looking like user IDs, strings in valid UTF-8,
// and Content a JSON object.
func (m *ToDeviceMessage) validate(index int) error {
	fail := func(reason string) error {
		return &InvalidInputError{Err: ErrInvalidToDevice, Index: index, Reason: reason}
	}
	for _, f := range []struct{ name, value string }{
		{"Sender", m.Sender}, {"Type", m.Type}, {"ToUserID", m.ToUserID}, {"ToDeviceID", m.ToDeviceID},
	} {
		if f.value == "" {
			return fail("ToDeviceMessage." + f.name + " is empty")
		}
	}
	for _, f := range []struct{ name, value string }{{"Sender", m.Sender}, {"ToUserID", m.ToUserID}} {
		if !isUserID(f.value) {
			return fail(fmt.Sprintf("ToDeviceMessage.%s %s is not a user ID (@localpart:server)", f.name, quoteShort(f.value)))
		}
	}
	for _, f := range []struct{ name, value string }{{"Type", m.Type}, {"ToDeviceID", m.ToDeviceID}, {"MessageID", m.MessageID}} {
		if !utf8.ValidString(f.value) {
			return fail("ToDeviceMessage." + f.name + " is not valid UTF-8")
		}
	}
	if err := eventjson.CheckObject(m.Content); err != nil {
		return fail("ToDeviceMessage.Content: " + err.Error())
	}
	return nil
}

// key returns the deduplication key of m: empty without a MessageID, else
// recipient and MessageID, unambiguously joined.
func (m *ToDeviceMessage) key() string {
	if m.MessageID == "" {
		return ""
	}
	return fmt.Sprintf("%d:%s%d:%s%s", len(m.ToUserID), m.ToUserID, len(m.ToDeviceID), m.ToDeviceID, m.MessageID)
}

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

// isUserID reports whether s looks like a Matrix user ID: '@', a
// localpart, ':', a server name, in valid UTF-8. It checks no more: user
// IDs of other servers follow their rules.
func isUserID(s string) bool {
	i := strings.IndexByte(s, ':')
	return len(s) >= 4 && s[0] == '@' && i > 1 && i < len(s)-1 && utf8.ValidString(s)
}

// accepting returns nil while the scheduler takes new work, else
// ErrNotStarted or ErrStopped.
func (s *Scheduler) accepting() error {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	switch state {
	case stateNew:
		return ErrNotStarted
	case stateStopped:
		return ErrStopped
	}
	return nil
}

// checkCallSize returns ErrBatchTooLarge for a call of n items, or of size
// bytes, that the pool could never admit.
func (s *Scheduler) checkCallSize(n, size int, what string) error {
	if n > s.cfg.MaxPoolEvents {
		return fmt.Errorf("%w: %d %s, at most %d (Config.MaxPoolEvents) per call", ErrBatchTooLarge, n, what, s.cfg.MaxPoolEvents)
	}
	if size > s.cfg.MaxPoolBytes {
		return fmt.Errorf("%w: %d bytes of %s, at most %d (Config.MaxPoolBytes) per call", ErrBatchTooLarge, size, what, s.cfg.MaxPoolBytes)
	}
	return nil
}

// submit commits entries through the EventPool, as one call: it returns
// once they are durable, or with the reason they are not. ctx bounds only
// the wait for room in the pool. No entries is a no-op.
func (s *Scheduler) submit(ctx context.Context, entries []store.Entry, what string) error {
	if len(entries) == 0 {
		return nil
	}
	call := &poolCall{entries: entries, events: len(entries), done: make(chan error, 1)}
	for i := range entries {
		call.bytes += len(entries[i].Data)
	}
	if err := s.checkCallSize(call.events, call.bytes, what); err != nil {
		return err
	}
	if err := s.pool.admit(ctx, call); err != nil {
		return err
	}
	if err := <-call.done; err != nil {
		return fmt.Errorf("error storing %s: %w", what, err)
	}
	return nil
}

// EnqueueEphemeral hands ephemeral events (typing notifications, read
// receipts, presence updates) to the scheduler and returns once they are
// durable in the Store for every service that wants them, with the
// guarantees of Enqueue: the whole call or nothing, ctx bounding only the
// wait for room in the pool, ErrNotStarted before Start and ErrStopped
// once Stop has begun, ErrBatchTooLarge for a call the pool could never
// admit. Like events, they are retried until delivered, in enqueue order
// with the events and everything else owed to a service, at most
// MaxEphemeralPerTxn per transaction.
//
// A service receives them if it opted in (receive_ephemeral or
// de.sorunome.msc2409.push_ephemeral; both keys carry the same events when
// both are set), and, as Synapse decides: a typing notification or read
// receipt if it is interested in the room (rooms namespace, or through
// Config.Rooms a local alias or local member of the room), a presence
// update if it is interested in the user (users namespace or own user) or,
// through UserRooms, in a room the user is joined to. A service with url:
// null receives nothing.
//
// Every typing notification is delivered, also one that a later one for
// the same room supersedes; none is deduplicated. An invalid event fails
// the call with an *InvalidInputError (ErrInvalidEphemeral), as does one
// larger than Config.MaxTxnBytes.
func (s *Scheduler) EnqueueEphemeral(ctx context.Context, events ...EphemeralEvent) error {
	if err := s.accepting(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	size := 0
	for i := range events {
		ev := &events[i]
		if err := ev.validate(i); err != nil {
			return err
		}
		if err := s.checkItemSize(ErrInvalidEphemeral, i, len(ev.Raw)); err != nil {
			return err
		}
		size += len(ev.Raw)
	}
	if err := s.checkCallSize(len(events), size, "ephemeral events"); err != nil {
		return err
	}
	ri := s.sorter.lookups()
	var entries []store.Entry
	var ids []string
	for i := range events {
		ev := &events[i]
		var err error
		if ids, err = s.sorter.ephemeralInterest(ctx, ev, ri, ids[:0]); err != nil {
			return fmt.Errorf("error deciding interest in ephemeral event %d (%s): %w", i, ev.Type, err)
		}
		if len(ids) > 0 {
			entries = append(entries, store.Entry{
				Item:     store.Item{Kind: store.KindEphemeral, Data: ev.Raw},
				Services: append([]string(nil), ids...),
			})
		}
	}
	return s.submit(ctx, entries, "ephemeral events")
}

// checkItemSize returns an *InvalidInputError for an item of size bytes
// that no transaction could carry.
func (s *Scheduler) checkItemSize(kind error, index, size int) error {
	if size > s.cfg.MaxTxnBytes {
		return &InvalidInputError{Err: kind, Index: index,
			Reason: fmt.Sprintf("%d bytes, more than Config.MaxTxnBytes (%d)", size, s.cfg.MaxTxnBytes)}
	}
	return nil
}

// EnqueueToDevice hands to-device messages to the scheduler and returns
// once they are durable in the Store for every service that wants them,
// with the guarantees of Enqueue (see EnqueueEphemeral), at most
// MaxToDevicePerTxn per transaction.
//
// A message goes to every service that opted in to ephemeral events
// (receive_ephemeral or de.sorunome.msc2409.push_ephemeral, as Synapse
// requires) and is interested in the recipient: its users namespace,
// exclusive or not, holds ToUserID, or ToUserID is its own user. A service
// with url: null receives nothing. A message with a MessageID still
// pending for a service is not queued twice for it.
//
// An invalid message fails the call with an *InvalidInputError
// (ErrInvalidToDevice), as does one whose encoded form is larger than
// Config.MaxTxnBytes.
func (s *Scheduler) EnqueueToDevice(ctx context.Context, msgs ...ToDeviceMessage) error {
	if err := s.accepting(); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := s.checkCallSize(len(msgs), 0, "to-device messages"); err != nil {
		return err
	}
	var entries []store.Entry
	for i := range msgs {
		m := &msgs[i]
		if err := m.validate(i); err != nil {
			return err
		}
		data := wire.EncodeToDevice(m.ToUserID, m.ToDeviceID, m.Type, m.Sender, m.Content)
		if err := s.checkItemSize(ErrInvalidToDevice, i, len(data)); err != nil {
			return err
		}
		ids := s.sorter.services.WantUser(interest.Ephemeral, m.ToUserID, nil)
		if len(ids) > 0 {
			entries = append(entries, store.Entry{
				Item:     store.Item{Kind: store.KindToDevice, Key: m.key(), Data: data},
				Services: ids,
			})
		}
	}
	return s.submit(ctx, entries, "to-device messages")
}

// EnqueueDeviceLists hands one summary of device-list changes to the
// scheduler and returns once it is durable in the Store for every service
// that wants part of it, with the guarantees of Enqueue (see
// EnqueueEphemeral). Each service that opted in to MSC3202 receives the
// users it is interested in (see DeviceListChanges); a service with url:
// null receives nothing. Summaries are merged per transaction, at most
// MaxDeviceListsPerTxn of them (a summary too large for
// Config.MaxTxnBytes is stored in parts, which merge to the same).
//
// Invalid changes fail the call with an *InvalidInputError
// (ErrInvalidDeviceLists); changes with no user are a no-op.
func (s *Scheduler) EnqueueDeviceLists(ctx context.Context, changes DeviceListChanges) error {
	if err := s.accepting(); err != nil {
		return err
	}
	if err := changes.validate(); err != nil {
		return err
	}
	if len(changes.Changed)+len(changes.Left) == 0 {
		return nil
	}
	if err := s.checkCallSize(len(changes.Changed)+len(changes.Left), 0, "users in device-list changes"); err != nil {
		return err
	}
	ri := s.sorter.lookups()
	var entries []store.Entry
	byData := make(map[string]int) // data → its entry, shared by services owed the same users
	for _, m := range s.sorter.services {
		if m.OptIns&interest.DeviceData == 0 {
			continue
		}
		changed, err := ri.UsersOfInterest(ctx, m, changes.Changed)
		if err != nil {
			return fmt.Errorf("error deciding interest in device-list changes: %w", err)
		}
		left, err := ri.UsersOfInterest(ctx, m, changes.Left)
		if err != nil {
			return fmt.Errorf("error deciding interest in device-list changes: %w", err)
		}
		if len(changed)+len(left) == 0 {
			continue
		}
		for _, data := range s.splitDeviceLists(changed, left) {
			if len(data) > s.cfg.MaxTxnBytes {
				return &InvalidInputError{Err: ErrInvalidDeviceLists,
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
	return s.submit(ctx, entries, "device-list changes")
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

// EnqueueDeviceKeyCounts hands the key counts of devices to the scheduler
// and returns once they are durable in the Store for every service that
// wants them, with the guarantees of Enqueue (see EnqueueEphemeral). The
// counts of a device go to every service that opted in to MSC3202 and is
// interested in its user (users namespace, exclusive or not, or own user);
// a service with url: null receives nothing. They are merged per
// transaction, at most MaxKeyCountsPerTxn of them (see DeviceKeyCounts).
//
// Invalid counts fail the call with an *InvalidInputError
// (ErrInvalidKeyCounts).
func (s *Scheduler) EnqueueDeviceKeyCounts(ctx context.Context, counts ...DeviceKeyCounts) error {
	if err := s.accepting(); err != nil {
		return err
	}
	if len(counts) == 0 {
		return nil
	}
	if err := s.checkCallSize(len(counts), 0, "device key counts"); err != nil {
		return err
	}
	var entries []store.Entry
	for i := range counts {
		c := &counts[i]
		if err := c.validate(i); err != nil {
			return err
		}
		data := wire.EncodeKeyCounts(c.UserID, c.DeviceID, c.OneTimeKeyCounts, c.UnusedFallbackKeyTypes)
		if err := s.checkItemSize(ErrInvalidKeyCounts, i, len(data)); err != nil {
			return err
		}
		if ids := s.sorter.services.WantUser(interest.DeviceData, c.UserID, nil); len(ids) > 0 {
			entries = append(entries, store.Entry{
				Item:     store.Item{Kind: store.KindKeyCounts, Data: data},
				Services: ids,
			})
		}
	}
	return s.submit(ctx, entries, "device key counts")
}
