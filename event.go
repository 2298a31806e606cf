package scheduler

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"unicode/utf8"
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
// JSON parsers disagree about which one counts.
//
// Event.Raw is a copy of raw, byte for byte; the caller may reuse raw. Every
// error is an *InvalidEventError with Index 0, matching ErrInvalidEvent.
func ParseEvent(raw []byte) (Event, error) {
	var f eventFields
	if err := scanEvent(raw, &f); err != nil {
		return Event{}, &InvalidEventError{Reason: err.Error()}
	}
	// One string holds the bytes of every field: the unescaped ones are
	// substrings of it, so parsing costs two allocations, not six.
	whole := string(raw)
	var ev Event
	fail := func(reason string) (Event, error) {
		return Event{}, &InvalidEventError{EventID: ev.ID, Reason: reason}
	}
	for k := range keyStateKey {
		if f.seen&(1<<k) == 0 {
			return fail("missing " + keyNames[k])
		}
		if f.notString&(1<<k) != 0 {
			return fail(keyNames[k] + " is not a string")
		}
		s, err := f.value(whole, k)
		if err != nil {
			return fail(err.Error())
		}
		if s == "" {
			return fail(keyNames[k] + " is empty")
		}
		*ev.field(k) = s
	}
	if f.seen&(1<<keyStateKey) != 0 {
		if f.notString&(1<<keyStateKey) != 0 {
			return fail("state_key is not a string")
		}
		s, err := f.value(whole, keyStateKey)
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
	var f eventFields
	if err := scanEvent(e.Raw, &f); err != nil {
		return fail("Event.Raw: " + err.Error())
	}
	for k := range numKeys {
		var want string
		if k == keyStateKey {
			present := f.seen&(1<<k) != 0
			switch {
			case e.StateKey == nil && !present:
				continue
			case e.StateKey == nil:
				return fail("Event.Raw has a state_key but Event.StateKey is nil")
			case !present:
				return fail("Event.StateKey is set but Event.Raw has no state_key")
			}
			want = *e.StateKey
		} else {
			want = *e.field(k)
			if f.seen&(1<<k) == 0 {
				return fail("Event.Raw has no " + keyNames[k])
			}
		}
		if f.notString&(1<<k) != 0 {
			return fail("Event.Raw: " + keyNames[k] + " is not a string")
		}
		if ok, err := f.equal(e.Raw, k, want); err != nil {
			return fail("Event.Raw: " + err.Error())
		} else if !ok {
			got, _ := f.value(string(e.Raw), k)
			return fail(fmt.Sprintf("%s in Event.Raw is %s but the Event field says %s",
				keyNames[k], quoteShort(got), quoteShort(want)))
		}
	}
	return nil
}

// field returns the Event field that holds top-level key k (not state_key).
func (e *Event) field(k int) *string {
	switch k {
	case keyEventID:
		return &e.ID
	case keyRoomID:
		return &e.RoomID
	case keySender:
		return &e.Sender
	default:
		return &e.Type
	}
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const limit = 100
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q...", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// The top-level keys of an event that scanEvent extracts, as indexes into
// eventFields and bits in its masks.
const (
	keyEventID = iota
	keyRoomID
	keySender
	keyType
	keyStateKey
	numKeys
)

var keyNames = [numKeys]string{"event_id", "room_id", "sender", "type", "state_key"}

// maxJSONDepth is the deepest nesting of arrays and objects an event may
// have; it is encoding/json's limit, so scanEvent accepts what json.Valid
// accepts.
const maxJSONDepth = 10000

// eventFields is what scanEvent found at the top level of an event.
type eventFields struct {
	// start and end delimit the value of key k, quotes included, when it
	// is a string: raw[start[k]:end[k]].
	start, end [numKeys]int
	seen       uint8 // bit k: key k is present
	notString  uint8 // bit k: key k's value is not a string
	escaped    uint8 // bit k: key k's string value has a backslash escape
}

// value returns the decoded string value of key k; raw is the scanned event.
func (f *eventFields) value(raw string, k int) (string, error) {
	quoted := raw[f.start[k]:f.end[k]]
	if f.escaped&(1<<k) == 0 {
		return quoted[1 : len(quoted)-1], nil
	}
	var s string
	if err := json.Unmarshal([]byte(quoted), &s); err != nil {
		return "", fmt.Errorf("%s: %w", keyNames[k], err)
	}
	return s, nil
}

// equal reports whether the decoded string value of key k equals want,
// without allocating when the value has no escapes.
func (f *eventFields) equal(raw []byte, k int, want string) (bool, error) {
	if f.escaped&(1<<k) == 0 {
		return string(raw[f.start[k]+1:f.end[k]-1]) == want, nil
	}
	var s string
	if err := json.Unmarshal(raw[f.start[k]:f.end[k]], &s); err != nil {
		return false, fmt.Errorf("%s: %w", keyNames[k], err)
	}
	return s == want, nil
}

// scanError is a reason scanEvent rejected its input.
type scanError struct {
	off int    // byte offset in the input, or -1
	msg string // what is wrong
}

func (e *scanError) Error() string {
	if e.off < 0 {
		return e.msg
	}
	return fmt.Sprintf("%s at byte %d", e.msg, e.off)
}

// scanEvent checks, in one pass, that data is exactly one JSON object (with
// optional surrounding white space) in valid UTF-8 and nested at most
// maxJSONDepth deep, and records in f where the top-level event_id, room_id,
// sender, type and state_key are. A repeat of one of these keys is an error.
// Keys compare by their decoded value, exactly (not case-insensitively as
// encoding/json does for struct fields).
//
// It accepts exactly what json.Valid and utf8.Valid both accept, when that
// is an object without repeated extracted keys.
func scanEvent(data []byte, f *eventFields) *scanError {
	s := jsonScanner{data: data}
	s.skipSpace()
	if s.pos >= len(data) {
		return &scanError{off: -1, msg: "empty input: an event is a JSON object"}
	}
	if data[s.pos] != '{' {
		if s.value(0) && s.skipSpace() == len(data) {
			return &scanError{off: -1, msg: "not a JSON object: an event is a JSON object"}
		}
		if s.err != nil {
			return s.err
		}
		return s.fail("invalid character after top-level value")
	}
	s.pos++
	s.skipSpace()
	dup, dupOff := -1, 0 // the first repeated extracted key, reported at the end
	if s.pos < len(data) && data[s.pos] == '}' {
		s.pos++
	} else {
		for {
			if s.pos >= len(data) || data[s.pos] != '"' {
				return s.failOrEOF("expected a string key")
			}
			keyStart := s.pos
			keyEscaped, ok := s.str()
			if !ok {
				return s.err
			}
			k := lookupKey(data[keyStart:s.pos], keyEscaped)
			s.skipSpace()
			if s.pos >= len(data) || data[s.pos] != ':' {
				return s.failOrEOF("expected ':' after object key")
			}
			s.pos++
			s.skipSpace()
			if k >= 0 && f.seen&(1<<k) != 0 {
				if dup < 0 {
					dup, dupOff = k, keyStart
				}
				k = -1 // keep the first one; the event is rejected anyway
			}
			switch {
			case k < 0:
				if !s.value(1) {
					return s.err
				}
			case s.pos < len(data) && data[s.pos] == '"':
				f.seen |= 1 << k
				f.start[k] = s.pos
				esc, ok := s.str()
				if !ok {
					return s.err
				}
				f.end[k] = s.pos
				if esc {
					f.escaped |= 1 << k
				}
			default:
				f.seen |= 1 << k
				f.notString |= 1 << k
				if !s.value(1) {
					return s.err
				}
			}
			s.skipSpace()
			if s.pos >= len(data) {
				return s.fail("unexpected end of input")
			}
			if data[s.pos] == ',' {
				s.pos++
				s.skipSpace()
				continue
			}
			if data[s.pos] == '}' {
				s.pos++
				break
			}
			return s.fail("expected ',' or '}' after object value")
		}
	}
	if s.skipSpace() != len(data) {
		return s.fail("invalid character after top-level value")
	}
	if dup >= 0 {
		// Reported only for otherwise valid JSON: parsers disagree on
		// which of the two counts, so the event is ambiguous.
		return &scanError{off: dupOff, msg: fmt.Sprintf("duplicate top-level key %q", keyNames[dup])}
	}
	return nil
}

// lookupKey returns the index of the extracted key whose name the quoted
// JSON string key spells, or -1.
func lookupKey(quoted []byte, escaped bool) int {
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
		return keyEventID
	case "room_id":
		return keyRoomID
	case "sender":
		return keySender
	case "type":
		return keyType
	case "state_key":
		return keyStateKey
	}
	return -1
}

// jsonScanner validates JSON (RFC 8259) plus UTF-8, by recursive descent.
type jsonScanner struct {
	data []byte
	pos  int
	err  *scanError
}

func (s *jsonScanner) fail(msg string) *scanError {
	if s.err == nil {
		s.err = &scanError{off: s.pos, msg: "invalid JSON: " + msg}
	}
	return s.err
}

// failOrEOF reports msg, or "unexpected end of input" at the end.
func (s *jsonScanner) failOrEOF(msg string) *scanError {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of input")
	}
	return s.fail(msg)
}

// skipSpace moves past JSON white space and returns the new position.
func (s *jsonScanner) skipSpace() int {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return s.pos
		}
	}
	return s.pos
}

// value scans one JSON value at s.pos, nested in depth arrays or objects.
func (s *jsonScanner) value(depth int) bool {
	if s.pos >= len(s.data) {
		s.fail("unexpected end of input")
		return false
	}
	switch c := s.data[s.pos]; c {
	case '"':
		_, ok := s.str()
		return ok
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return s.number()
		}
		s.fail(fmt.Sprintf("invalid character %q looking for a value", c))
		return false
	}
}

func (s *jsonScanner) literal(lit string) bool {
	if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
		s.pos += len(lit)
		return true
	}
	s.fail("invalid literal, expected " + lit)
	return false
}

func (s *jsonScanner) object(depth int) bool {
	if depth > maxJSONDepth {
		s.fail("nested too deeply")
		return false
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return true
	}
	for {
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			s.failOrEOF("expected a string key")
			return false
		}
		if _, ok := s.str(); !ok {
			return false
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			s.failOrEOF("expected ':' after object key")
			return false
		}
		s.pos++
		s.skipSpace()
		if !s.value(depth) {
			return false
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			s.fail("unexpected end of input")
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case '}':
			s.pos++
			return true
		default:
			s.fail("expected ',' or '}' after object value")
			return false
		}
	}
}

func (s *jsonScanner) array(depth int) bool {
	if depth > maxJSONDepth {
		s.fail("nested too deeply")
		return false
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return true
	}
	for {
		if !s.value(depth) {
			return false
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			s.fail("unexpected end of input")
			return false
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case ']':
			s.pos++
			return true
		default:
			s.fail("expected ',' or ']' after array element")
			return false
		}
	}
}

// plainStringByte[c] is true for the bytes a JSON string holds as they are:
// printable ASCII except '"' and '\\'.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans the JSON string at s.pos (its opening quote) and reports
// whether it has a backslash escape.
func (s *jsonScanner) str() (escaped, ok bool) {
	data := s.data
	i := s.pos + 1
	for {
		// Skip plain bytes eight at a time, then one at a time.
		for len(data)-i >= 8 && !hasSpecialByte(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && plainStringByte[data[i]] {
			i++
		}
		if i >= len(data) {
			s.pos = i
			s.fail("unexpected end of input in string")
			return escaped, false
		}
		switch c := data[i]; {
		case c == '"':
			s.pos = i + 1
			return escaped, true
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				s.pos = i + 1
				s.fail("unexpected end of input in string escape")
				return escaped, false
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(data)-i < 6 || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) || !isHex(data[i+5]) {
					s.pos = i
					s.fail(`invalid \u escape in string`)
					return escaped, false
				}
				i += 6
			default:
				s.pos = i
				s.fail("invalid escape in string")
				return escaped, false
			}
		case c < 0x20:
			s.pos = i
			s.fail("control character in string")
			return escaped, false
		default: // c >= 0x80
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				s.pos = i
				s.fail("invalid UTF-8 in string")
				return escaped, false
			}
			i += size
		}
	}
}

// hasSpecialByte reports whether one of the eight bytes in x is not a
// plain string byte: < 0x20, '"', '\\' or >= 0x80. (The classic SWAR tests:
// (x-0x01..)&^x&0x80.. is non-zero exactly when a byte of x is zero.)
func hasSpecialByte(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	less := (x - lo*0x20) &^ x
	quote := x ^ (lo * '"')
	backslash := x ^ (lo * '\\')
	return (less|(quote-lo)&^quote|(backslash-lo)&^backslash|x)&hi != 0
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	data, i := s.data, s.pos
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
	default:
		s.pos = i
		s.failOrEOF("invalid number")
		return false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || data[i] < '0' || data[i] > '9' {
			s.pos = i
			s.failOrEOF("invalid number: digit expected after '.'")
			return false
		}
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || data[i] < '0' || data[i] > '9' {
			s.pos = i
			s.failOrEOF("invalid number: digit expected in exponent")
			return false
		}
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
	}
	s.pos = i
	return true
}
