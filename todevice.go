package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/eventjson"
	"github.com/asdeliver/scheduler/internal/interest"
	"github.com/asdeliver/scheduler/internal/wire"
	"github.com/asdeliver/scheduler/store"
)

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

// stored returns m in the form the services receive.
func (m *ToDeviceMessage) stored(index, maxBytes int) (store.Item, error) {
	data := wire.EncodeToDevice(m.ToUserID, m.ToDeviceID, m.Type, m.Sender, m.Content)
	return store.Item{Kind: store.KindToDevice, Key: m.key(), Data: data}, checkItemSize(ErrInvalidToDevice, index, len(data), maxBytes)
}

// wants returns the services that opted in to ephemeral events and are
// interested in the recipient.
func (m *ToDeviceMessage) wants(_ context.Context, es *eventSorter, _ *interest.Rooms, _ int, dst []string) ([]string, error) {
	return es.services.WantUser(interest.Ephemeral, m.ToUserID, dst), nil
}
