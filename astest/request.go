package astest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"time"
)

// Request is one request a Server received, and what it answered.
type Request struct {
	// N numbers the requests in the order they arrived, from 0.
	N int
	// Method, Path and Query (raw, without '?') are those of the request.
	Method, Path, Query string
	// TxnID is the transaction ID of a request to
	// /_matrix/app/v1/transactions/{txnId}; "" for any other path.
	TxnID string
	// Auth and ContentType are its Authorization and Content-Type headers;
	// Header holds every header.
	Auth, ContentType string
	Header            http.Header
	// Body is the body as received.
	Body []byte
	// Truncated reports that the body did not arrive whole: the sender
	// went away while sending it. Such a request is not answered.
	Truncated bool
	// Txn is the body of a transaction PUT decoded as an application
	// service decodes it; nil for any other request, and for a body that is
	// not JSON or has no "events".
	Txn *Txn
	// Status is what the server answered: 0 when it answered nothing (the
	// sender gave up first, Answer.Drop, or Close).
	Status int
	// Arrived is when the request arrived, Done when the server recorded
	// its answer, just before writing it.
	Arrived, Done time.Time
}

// Txn is the body of a transaction as an application service decodes it:
// the keys of the Matrix Application Service API, with the unstable names
// of MSC2409 and MSC3202 that homeservers send.
type Txn struct {
	// Events are the persistent events ("events"), present in every body.
	Events []Event `json:"events"`
	// Ephemeral and EphemeralUnstable are the ephemeral events (typing,
	// receipts, presence) under "ephemeral" and under
	// "de.sorunome.msc2409.ephemeral", as the service opted in; when both
	// are present they carry the same events.
	Ephemeral         []json.RawMessage `json:"ephemeral"`
	EphemeralUnstable []json.RawMessage `json:"de.sorunome.msc2409.ephemeral"`
	// ToDevice are the to-device messages ("de.sorunome.msc2409.to_device").
	ToDevice []json.RawMessage `json:"de.sorunome.msc2409.to_device"`
	// DeviceLists are the device-list changes
	// ("org.matrix.msc3202.device_lists").
	DeviceLists *DeviceLists `json:"org.matrix.msc3202.device_lists"`
	// OneTimeKeyCounts are the one-time key counts, user → device →
	// algorithm → count ("org.matrix.msc3202.device_one_time_keys_count",
	// also sent as "org.matrix.msc3202.device_one_time_key_counts").
	OneTimeKeyCounts map[string]map[string]map[string]int `json:"org.matrix.msc3202.device_one_time_keys_count"`
	// FallbackKeyTypes are the unused fallback key types, user → device →
	// algorithms ("org.matrix.msc3202.device_unused_fallback_key_types").
	FallbackKeyTypes map[string]map[string][]string `json:"org.matrix.msc3202.device_unused_fallback_key_types"`
}

// Event is one persistent event of a transaction, as an application
// service reads it.
type Event struct {
	ID       string          `json:"event_id"`  // event_id
	RoomID   string          `json:"room_id"`   // room_id
	Sender   string          `json:"sender"`    // sender
	Type     string          `json:"type"`      // type
	StateKey *string         `json:"state_key"` // state_key; nil for an event that is not state
	Content  json.RawMessage `json:"content"`   // content, as received
}

// DeviceLists are the users whose device lists changed, and the users the
// service no longer shares a room with.
type DeviceLists struct {
	Changed []string `json:"changed"` // users whose device list changed
	Left    []string `json:"left"`    // users the service shares no room with any more
}

// txnBody is a body as decoded: a Txn and the second name of the one-time
// key counts.
type txnBody struct {
	Txn
	OneTimeKeyCountsOtherName map[string]map[string]map[string]int `json:"org.matrix.msc3202.device_one_time_key_counts"`
}

// decodeTxn decodes a transaction body, and returns the promises of the
// protocol that the body breaks; the Txn is nil when the body is not one.
func decodeTxn(body []byte) (txn *Txn, problems []string) {
	var b txnBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, []string{"body is not a JSON object: " + err.Error()}
	}
	if b.Events == nil {
		return nil, []string{`body has no "events"`}
	}
	if b.Ephemeral != nil && b.EphemeralUnstable != nil &&
		!slices.EqualFunc(b.Ephemeral, b.EphemeralUnstable, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) }) {
		problems = append(problems, `"ephemeral" and "de.sorunome.msc2409.ephemeral" differ`)
	}
	if b.OneTimeKeyCounts != nil && b.OneTimeKeyCountsOtherName != nil &&
		!reflect.DeepEqual(b.OneTimeKeyCounts, b.OneTimeKeyCountsOtherName) {
		problems = append(problems, "the two names of the one-time key counts differ")
	}
	return &b.Txn, problems
}
