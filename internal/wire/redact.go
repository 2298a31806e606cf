package wire

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// redactedMark replaces every secret in excerpts and error messages.
const redactedMark = "<redacted>"

// redact returns b with every byte that belongs to an occurrence of token
// or one of more (empty ones ignored) replaced, each maximal run of such
// bytes by a single redactedMark. Overlapping and adjacent occurrences of
// different secrets are covered together, so no part of any of them
// survives. It returns b itself when no secret occurs in it.
//
// A secret is found in every spelling an AS or a library may echo it in:
// as is, with any of its characters JSON-escaped (\u003c, \", \/, a
// surrogate pair), or percent-encoded (%3C, %3c), or a mix of these.
func redact(b []byte, token string, more []string) []byte {
	var covered []bool
	mark := func(from, to int) {
		if covered == nil {
			covered = make([]bool, len(b))
		}
		for k := from; k < to; k++ {
			covered[k] = true
		}
	}
	var dec *decoded
	if bytes.IndexByte(b, '\\') >= 0 || bytes.IndexByte(b, '%') >= 0 {
		dec = decode(b)
	}
	for i := -1; i < len(more); i++ {
		s := token
		if i >= 0 {
			s = more[i]
		}
		if s == "" {
			continue
		}
		forEach(b, s, func(at int) { mark(at, at+len(s)) })
		if dec != nil {
			forEach(dec.text, s, func(at int) { mark(dec.from[at], dec.to[at+len(s)-1]) })
		}
	}
	if covered == nil {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		if !covered[i] {
			out = append(out, b[i])
			i++
			continue
		}
		out = append(out, redactedMark...)
		for i < len(b) && covered[i] {
			i++
		}
	}
	return out
}

// forEach calls f with the index of every occurrence of s in b,
// overlapping ones included.
func forEach(b []byte, s string, f func(at int)) {
	for from := 0; ; {
		i := bytes.Index(b[from:], []byte(s))
		if i < 0 {
			return
		}
		f(from + i)
		from += i + 1
	}
}

// decoded is b with its JSON escapes and percent-encodings decoded: byte i
// of text comes from b[from[i]:to[i]].
type decoded struct {
	text     []byte
	from, to []int
}

// decode decodes every JSON escape and percent-encoding of b, one level
// deep, keeping where each decoded byte comes from. What is not a valid
// escape stays as it is.
func decode(b []byte) *decoded {
	d := &decoded{text: make([]byte, 0, len(b)), from: make([]int, 0, len(b)), to: make([]int, 0, len(b))}
	add := func(p []byte, from, to int) {
		for _, c := range p {
			d.text = append(d.text, c)
			d.from = append(d.from, from)
			d.to = append(d.to, to)
		}
	}
	for i := 0; i < len(b); {
		if p, n := unescape(b[i:]); n > 0 {
			add(p, i, i+n)
			i += n
			continue
		}
		add(b[i:i+1], i, i+1)
		i++
	}
	return d
}

// unescape decodes one JSON escape (to the UTF-8 of its character) or one
// percent-encoded byte at the start of b, and says how many bytes of b it
// took: 0 if b does not start with one.
func unescape(b []byte) ([]byte, int) {
	switch {
	case len(b) >= 3 && b[0] == '%' && isHexDigit(b[1]) && isHexDigit(b[2]):
		v, _ := strconv.ParseUint(string(b[1:3]), 16, 8)
		return []byte{byte(v)}, 3
	case len(b) >= 2 && b[0] == '\\':
		if c, ok := shortEscapes[b[1]]; ok {
			return []byte{c}, 2
		}
		if b[1] != 'u' {
			return nil, 0
		}
		r, ok := hex4(b[2:])
		if !ok {
			return nil, 0
		}
		if utf16.IsSurrogate(r) && len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
			if r2, ok := hex4(b[8:]); ok {
				if pair := utf16.DecodeRune(r, r2); pair != utf8.RuneError {
					return utf8.AppendRune(nil, pair), 12
				}
			}
		}
		return utf8.AppendRune(nil, r), 6
	}
	return nil, 0
}

// shortEscapes are JSON's two-character escapes and what they stand for.
var shortEscapes = map[byte]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 reads four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	for _, c := range b[:4] {
		if !isHexDigit(c) {
			return 0, false
		}
	}
	v, _ := strconv.ParseUint(string(b[:4]), 16, 16)
	return rune(v), true
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Redact returns b with every spelling of each secret (see redact)
// replaced by "<redacted>"; empty secrets are ignored. It returns b itself
// when no secret occurs in it.
func Redact(b []byte, secrets ...string) []byte {
	if len(secrets) == 0 {
		return b
	}
	return redact(b, secrets[0], secrets[1:])
}
