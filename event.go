package scheduler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/asdeliver/scheduler/internal/eventjson"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/store"
)

// Event is one persistent Matrix event (PDU) in client format, as the
// homeserver sends it to application services.
//
// ID, RoomID, Sender, Type and StateKey repeat what Raw says: the scheduler
// reads them to decide which application services want the event, and sends
// Raw to those services byte for byte. Build an Event with ParseEvent, or fill
// the fields yourself; Enqueue checks that they agree with Raw. Strings in Raw
// compare by their decoded value, so a Raw sender written "@\u0061lice:hs" is
// the Sender "@alice:hs".
type Event struct {
	// ID is the event's event_id.
	ID string
	// RoomID is the event's room_id.
	RoomID string
	// Sender is the event's sender: the user ID that sent it.
	Sender string
	// Type is the event's type, such as "m.room.message".
	Type string
	// StateKey is the event's state_key, nil when the event has none (it is
	// not a state event). A state event may have the empty state key: a
	// non-nil pointer to "".
	StateKey *string
	// Raw is the whole event, a JSON object in client format, sent to the
	// application service verbatim. It must be valid JSON and valid UTF-8.
	// Do not modify it once the Event is passed to Enqueue.
	Raw json.RawMessage
}

// ParseEvent reads the fields of an Event from raw, one event in client
// format: a JSON object with non-empty string members event_id, room_id,
// sender and type, and, for a state event, a string state_key. Other members
// are not looked at, but the whole of raw must be valid JSON and valid UTF-8
// (an application service that cannot parse a transaction would refuse it
// forever). An object that has one of those five members twice is rejected:
// JSON parsers disagree about which one counts. So is one of those five
// strings with a \u escape of a lone UTF-16 surrogate ("$x\ud800"): it
// decodes to U+FFFD, so two distinct event IDs would become one and an
// event would never be delivered. An event nested more than 128 levels deep
// (arrays and objects, the event itself the first), or holding a number
// beyond a 64-bit float's range (1e999), is refused too: an application
// service could not decode the transaction that carries it, and would
// refuse it forever. Enqueue checks the same of every Event, and
// EnqueueEphemeral and EnqueueToDevice of their events and contents.
//
// Event.Raw is a copy of raw, byte for byte; the caller may reuse raw. Every
// error is an *InvalidEventError with Index 0, matching ErrInvalidEvent.
func ParseEvent(raw []byte) (Event, error) {
	var f eventjson.Fields
	if err := eventjson.Scan(raw, &f); err != nil {
		return Event{}, &InvalidEventError{Reason: err.Error()}
	}
	// One string holds the bytes of every field: the unescaped ones are
	// substrings of it, so parsing costs two allocations, not six.
	whole := string(raw)
	var ev Event
	fail := func(reason string) (Event, error) {
		return Event{}, &InvalidEventError{EventID: ev.ID, Reason: reason}
	}
	for k := range eventjson.StateKey {
		s, err := f.Required(whole, k)
		if err != nil {
			return fail(err.Error())
		}
		*ev.field(k) = s
	}
	if f.Has(eventjson.StateKey) {
		if !f.IsString(eventjson.StateKey) {
			return fail("state_key is not a string")
		}
		s, err := f.Value(whole, eventjson.StateKey)
		if err != nil {
			return fail(err.Error())
		}
		ev.StateKey = &s
	}
	ev.Raw = append(json.RawMessage(nil), raw...)
	return ev, nil
}

// validate checks that e can be enqueued: ID, RoomID, Sender, Type and Raw
// are non-empty, Raw is one JSON object in valid UTF-8, and its event_id,
// room_id, sender, type and state_key equal the fields (StateKey is nil
// exactly when Raw has no state_key). index is the event's position in the
// Enqueue call, for the error. It makes one pass over Raw and allocates
// nothing unless a string in Raw has escapes or the event is invalid.
func (e *Event) validate(index int) error {
	fail := func(reason string) error {
		return &InvalidEventError{Index: index, EventID: e.ID, Reason: reason}
	}
	switch {
	case e.ID == "":
		return fail("Event.ID (event_id) is empty")
	case e.RoomID == "":
		return fail("Event.RoomID (room_id) is empty")
	case e.Sender == "":
		return fail("Event.Sender (sender) is empty")
	case e.Type == "":
		return fail("Event.Type (type) is empty")
	case len(e.Raw) == 0:
		return fail("Event.Raw is empty: it must hold the whole event as a JSON object")
	}
	var f eventjson.Fields
	if err := eventjson.Scan(e.Raw, &f); err != nil {
		return fail("Event.Raw: " + err.Error())
	}
	for k := range eventjson.NumKeys {
		var want string
		if k == eventjson.StateKey {
			switch {
			case e.StateKey == nil && !f.Has(k):
				continue
			case e.StateKey == nil:
				return fail("Event.Raw has a state_key but Event.StateKey is nil")
			case !f.Has(k):
				return fail("Event.StateKey is set but Event.Raw has no state_key")
			}
			want = *e.StateKey
		} else {
			want = *e.field(k)
			if !f.Has(k) {
				return fail("Event.Raw has no " + k.String())
			}
		}
		if !f.IsString(k) {
			return fail("Event.Raw: " + k.String() + " is not a string")
		}
		if ok, err := f.Equal(e.Raw, k, want); err != nil {
			return fail("Event.Raw: " + err.Error())
		} else if !ok {
			got, _ := f.Value(string(e.Raw), k)
			return fail(fmt.Sprintf("%s in Event.Raw is %s but the Event field says %s",
				k, quoteShort(got), quoteShort(want)))
		}
	}
	return nil
}

// stored returns e as stored, or an *EventTooLargeError.
func (e *Event) stored(index, maxBytes int) (store.Item, error) {
	if len(e.Raw) > maxBytes {
		return store.Item{}, &EventTooLargeError{Index: index, EventID: e.ID, Size: len(e.Raw), Max: maxBytes}
	}
	return store.Item{Kind: store.KindEvent, Key: e.ID, Data: e.Raw}, nil
}

// wants returns the services interested in e.
func (e *Event) wants(ctx context.Context, es *eventSorter, rooms *interest.Rooms, _ int, dst []string) ([]string, error) {
	ids, err := es.interested(ctx, e, rooms, dst)
	if err != nil {
		return nil, fmt.Errorf("error deciding interest in event %s: %w", e.ID, err)
	}
	return ids, nil
}

// field returns the Event field that holds top-level key k (not state_key).
func (e *Event) field(k eventjson.Key) *string {
	switch k {
	case eventjson.EventID:
		return &e.ID
	case eventjson.RoomID:
		return &e.RoomID
	case eventjson.Sender:
		return &e.Sender
	default:
		return &e.Type
	}
}
