package eventjson

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects an event (or an
// ephemeral event, or a to-device message's content) may have, the event
// itself being the first level. A transaction body wraps an event two or
// three levels deeper, and an application service must decode it all:
// encoding/json (and so mautrix-go) stops at 10,000 levels, Python's json
// at about 1,000 (its recursion limit). 128 is well under both, and over
// anything a real event needs.
const MaxDepth = 128

// scanError is a reason Scan or CheckObject rejected its input.
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

// Scan checks, in one pass, that data is exactly one JSON object (with
// optional surrounding white space) in valid UTF-8 and nested at most
// MaxDepth deep, and records in f where the top-level event_id, room_id,
// sender, type and state_key are. A repeat of one of these keys is an
// error: JSON parsers disagree about which one counts. Keys compare by
// their decoded value, exactly (not case-insensitively as encoding/json
// does for struct fields).
//
// It accepts exactly what json.Valid and utf8.Valid both accept, when that
// is an object without repeated keys of its own, nested at most MaxDepth
// deep, and without numbers beyond a 64-bit float's range. It allocates nothing
// unless a key has escapes or data is invalid.
func Scan(data []byte, f *Fields) error {
	if err := scan(data, f); err != nil {
		return err
	}
	return nil
}

func scan(data []byte, f *Fields) *scanError {
	s := scanner{data: data}
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
	dup, dupOff := Key(-1), 0 // the first repeated key of ours, reported at the end
	more, _ := s.open(1, '}')
	for more {
		keyStart, keyEnd, keyEscaped, ok := s.key()
		if !ok {
			return s.err
		}
		k := lookupKey(data[keyStart:keyEnd], keyEscaped)
		if k >= 0 && f.Has(k) {
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
		if more, ok = s.next('}', "expected ',' or '}' after object value"); !ok {
			return s.err
		}
	}
	if s.skipSpace() != len(data) {
		return s.fail("invalid character after top-level value")
	}
	if dup >= 0 {
		// Reported only for otherwise valid JSON: parsers disagree on
		// which of the two counts, so the event is ambiguous.
		return &scanError{off: dupOff, msg: fmt.Sprintf("duplicate top-level key %q", dup)}
	}
	return nil
}

// CheckObject checks that data is exactly one JSON object (with optional
// surrounding white space) in valid UTF-8, nested at most MaxDepth deep,
// without numbers beyond a 64-bit float's range.
func CheckObject(data []byte) error {
	s := scanner{data: data}
	s.skipSpace()
	switch {
	case s.pos >= len(data):
		return errors.New("empty: it must be a JSON object")
	case data[s.pos] != '{':
		return errors.New("not a JSON object")
	case !s.value(0):
		return s.err
	case s.skipSpace() != len(data):
		return s.fail("invalid character after top-level value")
	}
	return nil
}

// scanner validates JSON (RFC 8259) plus UTF-8, by recursive descent.
type scanner struct {
	data []byte
	pos  int
	err  *scanError // the first error
}

func (s *scanner) fail(msg string) *scanError {
	if s.err == nil {
		s.err = &scanError{off: s.pos, msg: "invalid JSON: " + msg}
	}
	return s.err
}

// failOrEOF reports msg, or "unexpected end of input" at the end.
// refuse records, unless an error is recorded already, that valid JSON is
// refused at s.pos for the reason msg.
func (s *scanner) refuse(msg string) {
	if s.err == nil {
		s.err = &scanError{off: s.pos, msg: msg}
	}
}

func (s *scanner) failOrEOF(msg string) *scanError {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of input")
	}
	return s.fail(msg)
}

// skipSpace moves past JSON white space and returns the new position.
func (s *scanner) skipSpace() int {
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
func (s *scanner) value(depth int) bool {
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

func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
		s.pos += len(lit)
		return true
	}
	s.fail("invalid literal, expected " + lit)
	return false
}

func (s *scanner) object(depth int) bool {
	more, ok := s.open(depth, '}')
	for more {
		if _, _, _, ok = s.key(); !ok || !s.value(depth) {
			return false
		}
		more, ok = s.next('}', "expected ',' or '}' after object value")
	}
	return ok
}

func (s *scanner) array(depth int) bool {
	more, ok := s.open(depth, ']')
	for more {
		if !s.value(depth) {
			return false
		}
		more, ok = s.next(']', "expected ',' or ']' after array element")
	}
	return ok
}

// open moves past the '{' or '[' at s.pos that starts a container nested
// depth deep, and past its end byte if it is empty. more reports whether a
// member follows.
func (s *scanner) open(depth int, end byte) (more, ok bool) {
	if depth > MaxDepth {
		s.refuse(fmt.Sprintf("nested too deeply (more than %d levels of arrays and objects, which receivers may not decode)", MaxDepth))
		return false, false
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == end {
		s.pos++
		return false, true
	}
	return true, true
}

// key scans an object key at s.pos and the ':' after it, and returns where
// the quoted key is and whether it has a backslash escape.
func (s *scanner) key() (start, end int, escaped, ok bool) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		s.failOrEOF("expected a string key")
		return 0, 0, false, false
	}
	start = s.pos
	if escaped, ok = s.str(); !ok {
		return 0, 0, false, false
	}
	end = s.pos
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		s.failOrEOF("expected ':' after object key")
		return 0, 0, false, false
	}
	s.pos++
	s.skipSpace()
	return start, end, escaped, true
}

// next moves past the ',' after a member of a container and the white
// space after it, or past the container's end byte; more reports whether
// a member follows. msg says what was expected instead.
func (s *scanner) next(end byte, msg string) (more, ok bool) {
	s.skipSpace()
	if s.pos >= len(s.data) {
		s.fail("unexpected end of input")
		return false, false
	}
	switch s.data[s.pos] {
	case ',':
		s.pos++
		s.skipSpace()
		return true, true
	case end:
		s.pos++
		return false, true
	}
	s.fail(msg)
	return false, false
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
func (s *scanner) str() (escaped, ok bool) {
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
func (s *scanner) number() bool {
	data, i := s.data, s.pos
	exp := false
	if data[i] == '-' {
		i++
	}
	if i < len(data) && data[i] == '0' {
		i++
	} else if i = s.digits(i, "invalid number"); i < 0 {
		return false
	}
	if i < len(data) && data[i] == '.' {
		if i = s.digits(i+1, "invalid number: digit expected after '.'"); i < 0 {
			return false
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i = s.digits(i, "invalid number: digit expected in exponent"); i < 0 {
			return false
		}
		exp = true
	}
	// A number beyond a 64-bit float's range (1e999) decodes to an error
	// in Go and to infinity in Python. Only one with an exponent, or with
	// more digits than the largest float has, can be one.
	if exp || i-s.pos > 309 {
		if _, err := strconv.ParseFloat(string(data[s.pos:i]), 64); err != nil {
			s.refuse("number out of range of a 64-bit float, which receivers cannot decode")
			return false
		}
	}
	s.pos = i
	return true
}

// digits returns the end of the digits at i, or fails with msg at i and
// returns -1 when there are none.
func (s *scanner) digits(i int, msg string) int {
	end := i
	for end < len(s.data) && s.data[end] >= '0' && s.data[end] <= '9' {
		end++
	}
	if end == i {
		s.pos = i
		s.failOrEOF(msg)
		return -1
	}
	return end
}
