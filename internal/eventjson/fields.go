package eventjson

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Key is a top-level member of an event that Scan finds.
type Key int

// The keys Scan finds; NumKeys counts them.
const (
	EventID Key = iota
	RoomID
	Sender
	Type
	StateKey
	NumKeys
)

var keyNames = [NumKeys]string{"event_id", "room_id", "sender", "type", "state_key"}

// String returns the key as JSON spells it.
func (k Key) String() string { return keyNames[k] }

// lookupKey returns the key whose name the quoted JSON string key spells,
// or -1.
func lookupKey(quoted []byte, escaped bool) Key {
	name := quoted[1 : len(quoted)-1]
	if escaped {
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return -1
		}
		name = []byte(s)
	}
	switch string(name) {
	case "event_id":
		return EventID
	case "room_id":
		return RoomID
	case "sender":
		return Sender
	case "type":
		return Type
	case "state_key":
		return StateKey
	}
	return -1
}

// Fields is what Scan found at the top level of an event: where the value
// of each key is, by Key.
type Fields struct {
	// start and end delimit the value of key k, quotes included, when it
	// is a string: raw[start[k]:end[k]].
	start, end [NumKeys]int
	seen       uint8 // bit k: key k is present
	notString  uint8 // bit k: key k's value is not a string
	escaped    uint8 // bit k: key k's string value has a backslash escape
}

// Has reports whether the event has key k.
func (f *Fields) Has(k Key) bool { return f.seen&(1<<k) != 0 }

// IsString reports whether the event has key k with a string value.
func (f *Fields) IsString(k Key) bool { return f.Has(k) && f.notString&(1<<k) == 0 }

// Value returns the decoded string value of key k, which IsString; raw is
// the scanned event. It allocates only when the value has escapes.
func (f *Fields) Value(raw string, k Key) (string, error) {
	quoted := raw[f.start[k]:f.end[k]]
	if f.escaped&(1<<k) == 0 {
		return quoted[1 : len(quoted)-1], nil
	}
	var s string
	if err := json.Unmarshal([]byte(quoted), &s); err != nil {
		return "", fmt.Errorf("%s: %w", k, err)
	}
	return s, nil
}

// Required returns the decoded value of key k, or an error saying that
// the key is missing, not a string, or empty.
func (f *Fields) Required(raw string, k Key) (string, error) {
	switch {
	case !f.Has(k):
		return "", errors.New("missing " + k.String())
	case !f.IsString(k):
		return "", errors.New(k.String() + " is not a string")
	}
	s, err := f.Value(raw, k)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", errors.New(k.String() + " is empty")
	}
	return s, nil
}

// Equal reports whether the decoded string value of key k, which IsString,
// equals want, without allocating when the value has no escapes.
func (f *Fields) Equal(raw []byte, k Key, want string) (bool, error) {
	if f.escaped&(1<<k) == 0 {
		return string(raw[f.start[k]+1:f.end[k]-1]) == want, nil
	}
	var s string
	if err := json.Unmarshal(raw[f.start[k]:f.end[k]], &s); err != nil {
		return false, fmt.Errorf("%s: %w", k, err)
	}
	return s == want, nil
}
