package scheduler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/asdeliver/scheduler/internal/eventjson"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/store"
)

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

// stored returns e as stored.
func (e *EphemeralEvent) stored(index, maxBytes int) (store.Item, error) {
	return store.Item{Kind: store.KindEphemeral, Data: e.Raw}, checkItemSize(ErrInvalidEphemeral, index, len(e.Raw), maxBytes)
}

// wants returns the services that opted in and are interested in e's room
// or user.
func (e *EphemeralEvent) wants(ctx context.Context, es *eventSorter, rooms *interest.Rooms, index int, dst []string) ([]string, error) {
	ids, err := es.ephemeralInterest(ctx, e, rooms, dst)
	if err != nil {
		return nil, fmt.Errorf("error deciding interest in ephemeral event %d (%s): %w", index, e.Type, err)
	}
	return ids, nil
}
