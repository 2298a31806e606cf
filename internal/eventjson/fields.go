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
	return decode(quoted, k)
}

// decode returns the value of the escaped JSON string quoted, the value of
// key k. A lone UTF-16 surrogate escape is an error: JSON decoders replace
// it with U+FFFD, so two values that differ only in one would decode to
// the same string, and two events to one key.
func decode[T string | []byte](quoted T, k Key) (string, error) {
	if hasLoneSurrogate(string(quoted)) {
		return "", fmt.Errorf(`%s has a \u escape of a lone UTF-16 surrogate (\ud800-\udfff not in a pair), `+
			"which cannot be told apart from U+FFFD: escape a character, or a surrogate pair", k)
	}
	var s string
	if err := json.Unmarshal([]byte(quoted), &s); err != nil {
		return "", fmt.Errorf("%s: %w", k, err)
	}
	return s, nil
}

// hasLoneSurrogate reports whether the JSON string quoted, which Scan
// accepted, has a \u escape of a surrogate that is not the high half of a
// pair followed by its low half.
func hasLoneSurrogate(quoted string) bool {
	for i := 0; i < len(quoted); i++ {
		if quoted[i] != '\\' {
			continue
		}
		if quoted[i+1] != 'u' {
			i++ // a one-character escape
			continue
		}
		r := hex4(quoted[i+2 : i+6])
		switch {
		case r >= 0xdc00 && r < 0xe000:
			return true // a low half alone
		case r >= 0xd800 && r < 0xdc00:
			if i+12 > len(quoted) || quoted[i+6] != '\\' || quoted[i+7] != 'u' {
				return true
			}
			if lo := hex4(quoted[i+8 : i+12]); lo < 0xdc00 || lo >= 0xe000 {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

// hex4 returns the value of four hexadecimal digits.
func hex4(s string) rune {
	var r rune
	for i := 0; i < 4; i++ {
		c := rune(s[i])
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | c
	}
	return r
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
	s, err := decode(raw[f.start[k]:f.end[k]], k)
	if err != nil {
		return false, err
	}
	return s == want, nil
}
