package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/eventjson"
	"github.com/asdeliver/scheduler/internal/eventjson/eventjsontest"
	"github.com/stretchr/testify/require"
)

// messageEvent is a realistic m.room.message of about 400 bytes.
const messageEvent = `{"content":{"body":"Still on for the review at 15:00? Changelog is pushed.",` +
	`"format":"org.matrix.custom.html","formatted_body":"Still on for the review at <b>15:00</b>?","msgtype":"m.text"},` +
	`"event_id":"$Nh1mJ5c0qL4vPz8RkT2wYbXsDfGaUe7iOo3HjKl9Cn0","origin_server_ts":1732781234567,` +
	`"room_id":"!OGEhHVWSdvArJzumhm:example.org","sender":"@alice:example.org","type":"m.room.message",` +
	`"unsigned":{"age":1234,"transaction_id":"m1732781234.17"}}`

const stateEvent = `{"content":{"displayname":"Bob","membership":"join"},"event_id":"$member1",` +
	`"origin_server_ts":1732781234567,"room_id":"!room:example.org","sender":"@irc_bob:example.org",` +
	`"state_key":"@irc_bob:example.org","type":"m.room.member","unsigned":{"age":5}}`

func TestParseEventReadsFields(t *testing.T) {
	raw := []byte(messageEvent)
	ev, err := ParseEvent(raw)
	require.NoError(t, err)
	require.Equal(t, "$Nh1mJ5c0qL4vPz8RkT2wYbXsDfGaUe7iOo3HjKl9Cn0", ev.ID)
	require.Equal(t, "!OGEhHVWSdvArJzumhm:example.org", ev.RoomID)
	require.Equal(t, "@alice:example.org", ev.Sender)
	require.Equal(t, "m.room.message", ev.Type)
	require.Nil(t, ev.StateKey)
	require.Equal(t, messageEvent, string(ev.Raw))
	require.NoError(t, ev.validate(0))

	raw[0] = 'X'
	require.Equal(t, messageEvent, string(ev.Raw), "Raw is a copy of the caller's bytes")
}

func TestParseEventStateEvents(t *testing.T) {
	ev, err := ParseEvent([]byte(stateEvent))
	require.NoError(t, err)
	require.NotNil(t, ev.StateKey)
	require.Equal(t, "@irc_bob:example.org", *ev.StateKey)
	require.Equal(t, "m.room.member", ev.Type)
	require.NoError(t, ev.validate(0))

	ev, err = ParseEvent([]byte(`{"type":"m.room.create","state_key":"","event_id":"$c","room_id":"!r:hs","sender":"@a:hs","content":{}}`))
	require.NoError(t, err)
	require.NotNil(t, ev.StateKey, "the empty state key is a state key")
	require.Equal(t, "", *ev.StateKey)
	require.NoError(t, ev.validate(0))
}

func TestParseEventDecodesEscapes(t *testing.T) {
	raw := ` {"event_id":"$\u0031","room_id":"!r\/1:hs","sender":"\u0040alice:example.org",` +
		`"type":"m.\ud83d\ude00","state_key":"\"quoted\"\n","event\u005fid2":1,"content":{"body":"caf\u00e9"}}` + "\n"
	ev, err := ParseEvent([]byte(raw))
	require.NoError(t, err)
	require.Equal(t, "$1", ev.ID)
	require.Equal(t, "!r/1:hs", ev.RoomID)
	require.Equal(t, "@alice:example.org", ev.Sender, "strings compare by their decoded value")
	require.Equal(t, "m.😀", ev.Type)
	require.Equal(t, "\"quoted\"\n", *ev.StateKey)
	require.Equal(t, raw, string(ev.Raw), "Raw keeps the escapes and white space")
	require.NoError(t, ev.validate(0))

	ev.Sender = `\u0040alice:example.org`
	require.ErrorIs(t, ev.validate(0), ErrInvalidEvent, "the escaped form is not the value")

	// A key spelled with an escape is that key.
	ev, err = ParseEvent([]byte(`{"event\u005fid":"$1","room_id":"!r","sender":"@a","typ\u0065":"t"}`))
	require.NoError(t, err)
	require.Equal(t, "$1", ev.ID)
	require.Equal(t, "t", ev.Type)
	require.NoError(t, ev.validate(0))
}

func TestParseEventKeysAreCaseSensitive(t *testing.T) {
	// encoding/json would match "EVENT_ID" to a struct field event_id; an
	// application service's parser would not.
	_, err := ParseEvent([]byte(`{"EVENT_ID":"$1","room_id":"!r","sender":"@a","type":"t"}`))
	require.ErrorIs(t, err, ErrInvalidEvent)
	require.Contains(t, err.Error(), "missing event_id")
}

func TestParseEventRejects(t *testing.T) {
	ok := `"event_id":"$1","room_id":"!r:hs","sender":"@a:hs","type":"m.room.message"`
	cases := []struct {
		name string
		raw  string
		want string
	}{
		{"empty", "", "empty input"},
		{"white space", " \n\t", "empty input"},
		{"null", "null", "not a JSON object"},
		{"array", "[" + "{" + ok + "}" + "]", "not a JSON object"},
		{"string", `"event"`, "not a JSON object"},
		{"number", "123", "not a JSON object"},
		{"true", "true", "not a JSON object"},
		{"truncated", `{` + ok[:30], "unexpected end of input"},
		{"truncated after value", `{` + ok, "unexpected end of input"},
		{"open brace", `{`, "unexpected end of input"},
		{"trailing comma", `{` + ok + `,}`, "expected a string key"},
		{"missing colon", `{"event_id" "$1"}`, "expected ':'"},
		{"missing comma", `{"a":1 "b":2}`, "expected ',' or '}'"},
		{"trailing garbage", `{` + ok + `}x`, "after top-level value"},
		{"two objects", `{` + ok + `}{}`, "after top-level value"},
		{"single quotes", `{'event_id':'$1'}`, "expected a string key"},
		{"comment", `{` + ok + `/* hi */}`, "expected ',' or '}'"},
		{"unquoted key", `{event_id:"$1"}`, "expected a string key"},
		{"bad literal", `{` + ok + `,"x":tru}`, "expected true"},
		{"NaN", `{` + ok + `,"x":NaN}`, "invalid character"},
		{"leading zero", `{` + ok + `,"x":01}`, "expected ',' or '}'"},
		{"bare minus", `{` + ok + `,"x":-}`, "invalid number"},
		{"dot without digits", `{` + ok + `,"x":1.}`, "digit expected after '.'"},
		{"exponent without digits", `{` + ok + `,"x":1e+}`, "digit expected in exponent"},
		{"plus sign", `{` + ok + `,"x":+1}`, "invalid character"},
		{"bad escape", `{` + ok + `,"x":"\x"}`, "invalid escape"},
		{"short unicode escape", `{` + ok + `,"x":"\u12"}`, `invalid \u escape`},
		{"control character", `{` + ok + ",\"x\":\"a\tb\"}", "control character"},
		{"invalid UTF-8 in a value", `{` + ok + ",\"x\":\"\xff\"}", "invalid UTF-8"},
		{"invalid UTF-8 in a key", `{` + ok + ",\"\xc3\x28\":1}", "invalid UTF-8"},
		{"UTF-8 surrogate", `{` + ok + ",\"x\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
		{"byte order mark", "\ufeff{" + ok + "}", "invalid character"},
		{"too deep", `{` + ok + `,"x":` + strings.Repeat("[", eventjson.MaxDepth) + strings.Repeat("]", eventjson.MaxDepth) + `}`, "nested too deeply"},
		{"missing event_id", `{"room_id":"!r","sender":"@a","type":"t"}`, "missing event_id"},
		{"missing room_id", `{"event_id":"$1","sender":"@a","type":"t"}`, "missing room_id"},
		{"missing sender", `{"event_id":"$1","room_id":"!r","type":"t"}`, "missing sender"},
		{"missing type", `{"event_id":"$1","room_id":"!r","sender":"@a"}`, "missing type"},
		{"empty object", `{}`, "missing event_id"},
		{"event_id is a number", `{"event_id":1,"room_id":"!r","sender":"@a","type":"t"}`, "event_id is not a string"},
		{"room_id is null", `{"event_id":"$1","room_id":null,"sender":"@a","type":"t"}`, "room_id is not a string"},
		{"sender is an object", `{"event_id":"$1","room_id":"!r","sender":{"id":"@a"},"type":"t"}`, "sender is not a string"},
		{"type is an array", `{"event_id":"$1","room_id":"!r","sender":"@a","type":["t"]}`, "type is not a string"},
		{"state_key is a number", `{` + ok + `,"state_key":0}`, "state_key is not a string"},
		{"state_key is null", `{` + ok + `,"state_key":null}`, "state_key is not a string"},
		{"state_key is false", `{` + ok + `,"state_key":false}`, "state_key is not a string"},
		{"empty event_id", `{"event_id":"","room_id":"!r","sender":"@a","type":"t"}`, "event_id is empty"},
		{"empty sender", `{"event_id":"$1","room_id":"!r","sender":"","type":"t"}`, "sender is empty"},
		{"empty type", `{"event_id":"$1","room_id":"!r","sender":"@a","type":""}`, "type is empty"},
		{"duplicate sender", `{` + ok + `,"sender":"@mallory:hs"}`, `duplicate top-level key "sender"`},
		{"duplicate escaped key", `{` + ok + `,"s\u0065nder":"@mallory:hs"}`, `duplicate top-level key "sender"`},
		{"duplicate state_key", `{` + ok + `,"state_key":"","state_key":"@a:hs"}`, `duplicate top-level key "state_key"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(c.raw))
			require.Error(t, err)
			require.Equal(t, Event{}, ev)
			require.ErrorIs(t, err, ErrInvalidEvent)
			var ierr *InvalidEventError
			require.ErrorAs(t, err, &ierr)
			require.Equal(t, 0, ierr.Index)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

func TestParseEventErrorNamesTheEvent(t *testing.T) {
	_, err := ParseEvent([]byte(`{"event_id":"$abc","room_id":"!r","sender":"@a","type":""}`))
	var ierr *InvalidEventError
	require.ErrorAs(t, err, &ierr)
	require.Equal(t, "$abc", ierr.EventID)
	require.Equal(t, `invalid event 0 ($abc): type is empty`, err.Error())
}

func TestParseEventAccepts(t *testing.T) {
	base := `"event_id":"$1","room_id":"!r:hs","sender":"@a:hs","type":"m.room.message"`
	for name, raw := range map[string]string{
		"huge numbers":           `{` + base + `,"content":{"n":123456789012345678901234567890,"f":1e-999999,"g":-0.0e-0}}`,
		"deepest nesting":        `{` + base + `,"x":` + strings.Repeat("[", eventjson.MaxDepth-1) + strings.Repeat("]", eventjson.MaxDepth-1) + `}`,
		"escapes everywhere":     `{` + base + `,"c":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00\ud800"}`,
		"raw unicode":            `{` + base + `,"body":"日本語 😀 é"}`,
		"white space everywhere": " \r\n\t{ \"event_id\" : \"$1\" , \"room_id\":\"!r\",\"sender\":\"@a\",\"type\":\"t\" , \"x\" : [ 1 , { } , [ ] ] } \n",
		"duplicate other keys":   `{` + base + `,"content":{},"content":{"body":"x"}}`,
		"nested event_id":        `{` + base + `,"content":{"event_id":1,"sender":null}}`,
		"NUL escape":             `{` + base + `,"x":"\u0000"}`,
		"U+FFFD":                 `{` + base + `,"x":"` + string(utf8.RuneError) + `"}`,
		"escaped sender":         `{"event_id":"$1","room_id":"!r","sender":"\u0040a:hs","type":"t"}`,
		"unicode room":           `{"event_id":"$1","room_id":"!räum:hs","sender":"@a","type":"t"}`,
		"control escapes":        `{"event_id":"$\u0001","room_id":"!r","sender":"@a","type":"t"}`,
	} {
		t.Run(name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(raw))
			require.NoError(t, err)
			require.Equal(t, raw, string(ev.Raw))
			require.NoError(t, ev.validate(0))
			require.True(t, json.Valid([]byte(raw)))
		})
	}
}

func TestValidateEvent(t *testing.T) {
	good, err := ParseEvent([]byte(stateEvent))
	require.NoError(t, err)
	cases := []struct {
		name   string
		mutate func(*Event)
		want   string
	}{
		{"empty ID", func(e *Event) { e.ID = "" }, "Event.ID (event_id) is empty"},
		{"empty RoomID", func(e *Event) { e.RoomID = "" }, "Event.RoomID (room_id) is empty"},
		{"empty Sender", func(e *Event) { e.Sender = "" }, "Event.Sender (sender) is empty"},
		{"empty Type", func(e *Event) { e.Type = "" }, "Event.Type (type) is empty"},
		{"nil Raw", func(e *Event) { e.Raw = nil }, "Event.Raw is empty"},
		{"Raw not JSON", func(e *Event) { e.Raw = json.RawMessage(`{"event_id":`) }, "unexpected end of input"},
		{"Raw an array", func(e *Event) { e.Raw = json.RawMessage(`[]`) }, "not a JSON object"},
		{"Raw invalid UTF-8", func(e *Event) {
			e.Raw = append(bytes.TrimSuffix(bytes.Clone(e.Raw), []byte("}")), ",\"x\":\"\xff\"}"...)
		}, "invalid UTF-8"},
		{"ID differs", func(e *Event) { e.ID = "$other" }, `event_id in Event.Raw is "$member1" but the Event field says "$other"`},
		{"RoomID differs", func(e *Event) { e.RoomID = "!other:example.org" }, "room_id in Event.Raw"},
		{"Sender differs", func(e *Event) { e.Sender = "@mallory:example.org" }, "sender in Event.Raw"},
		{"Type differs", func(e *Event) { e.Type = "m.room.message" }, "type in Event.Raw"},
		{"StateKey differs", func(e *Event) { e.StateKey = ptr("@other:example.org") }, "state_key in Event.Raw"},
		{"StateKey empty but Raw has one", func(e *Event) { e.StateKey = ptr("") }, "state_key in Event.Raw"},
		{"StateKey nil but Raw has one", func(e *Event) { e.StateKey = nil }, "Event.Raw has a state_key but Event.StateKey is nil"},
		{"StateKey set but Raw has none", func(e *Event) {
			e.Raw = json.RawMessage(`{"event_id":"$member1","room_id":"!room:example.org","sender":"@irc_bob:example.org","type":"m.room.member"}`)
		}, "Event.StateKey is set but Event.Raw has no state_key"},
		{"Raw misses event_id", func(e *Event) {
			e.Raw = json.RawMessage(`{"room_id":"!room:example.org","sender":"@irc_bob:example.org","type":"m.room.member","state_key":"x"}`)
		}, "Event.Raw has no event_id"},
		{"Raw sender not a string", func(e *Event) {
			e.Raw = json.RawMessage(`{"event_id":"$member1","room_id":"!room:example.org","sender":7,"type":"m.room.member","state_key":"x"}`)
		}, "sender is not a string"},
		{"Raw state_key not a string", func(e *Event) {
			e.Raw = json.RawMessage(`{"event_id":"$member1","room_id":"!room:example.org","sender":"@irc_bob:example.org","type":"m.room.member","state_key":1}`)
		}, "state_key is not a string"},
		{"Raw duplicate type", func(e *Event) {
			e.Raw = json.RawMessage(`{"event_id":"$member1","room_id":"!room:example.org","sender":"@irc_bob:example.org","type":"m.room.member","state_key":"@irc_bob:example.org","type":"x"}`)
		}, `duplicate top-level key "type"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := good
			c.mutate(&ev)
			err := ev.validate(7)
			require.ErrorIs(t, err, ErrInvalidEvent)
			var ierr *InvalidEventError
			require.ErrorAs(t, err, &ierr)
			require.Equal(t, 7, ierr.Index)
			require.Equal(t, ev.ID, ierr.EventID)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

func TestValidateHandBuiltEvent(t *testing.T) {
	sk := ""
	ev := Event{
		ID: "$1", RoomID: "!r:hs", Sender: "@a:hs", Type: "m.room.name", StateKey: &sk,
		Raw: json.RawMessage(`{"type":"m.room.name","state_key":"","sender":"@a:hs","room_id":"!r:hs","event_id":"$1","content":{"name":"x"}}`),
	}
	require.NoError(t, ev.validate(0))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = ev.validate(0) }), "validate allocates nothing for a valid event")

	long := strings.Repeat("x", 500)
	ev.ID = long
	err := ev.validate(0)
	require.ErrorIs(t, err, ErrInvalidEvent)
	require.Less(t, len(err.Error()), 1200, "long values are shortened in messages")
}

// refParseEvent is ParseEvent's definition written with encoding/json, slowly:
// the oracle for FuzzParseEvent.
func refParseEvent(raw []byte) (fields map[string]string, stateKey *string, ok bool) {
	if !json.Valid(raw) || !utf8.Valid(raw) || !eventjsontest.Decodable(raw, eventjson.MaxDepth) {
		return nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	fields = map[string]string{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		switch key {
		case "event_id", "room_id", "sender", "type", "state_key":
			if seen[key] {
				return nil, nil, false
			}
			seen[key] = true
			var s string
			if err := json.Unmarshal(v, &s); err != nil || v[0] != '"' || refLoneSurrogate(v) {
				return nil, nil, false
			}
			if key == "state_key" {
				stateKey = &s
			} else if s == "" {
				return nil, nil, false
			} else {
				fields[key] = s
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, false
	}
	return fields, stateKey, len(fields) == 4
}

func FuzzParseEvent(f *testing.F) {
	ok := `"event_id":"$1","room_id":"!r:hs","sender":"@a:hs","type":"m.room.message"`
	for _, seed := range []string{
		messageEvent,
		stateEvent,
		`{"type":"m.room.create","state_key":"","event_id":"$c","room_id":"!r:hs","sender":"@a:hs","content":{}}`,
		`{"event_id":"$1","room_id":"!r","sender":"\u0040alice:hs","type":"m.\ud83d\ude00"}`,
		`{"event\u005fid":"$1","room_id":"!r","sender":"@a","typ\u0065":"t"}`,
		`{"EVENT_ID":"$1","room_id":"!r","sender":"@a","type":"t"}`,
		`{"room_id":"!r","sender":"@a","type":"t"}`,
		`{"event_id":"$1","sender":"@a","type":"t"}`,
		`{"event_id":"$1","room_id":"!r","type":"t"}`,
		`{"event_id":"$1","room_id":"!r","sender":"@a"}`,
		`{"event_id":1,"room_id":"!r","sender":"@a","type":"t"}`,
		`{"event_id":"$1","room_id":null,"sender":"@a","type":"t"}`,
		`{` + ok + `,"state_key":0}`,
		`{` + ok + `,"state_key":null}`,
		`{` + ok + `,"sender":"@m:hs"}`,
		`{"event_id":"","room_id":"!r","sender":"@a","type":"t"}`,
		`{` + ok + `,"n":123456789012345678901234567890,"f":1e999999,"g":-0.0e-0}`,
		`{` + ok + `,"n":123456789012345678901234567890,"f":1e-999999,"g":-0.0e-0}`,
		`{"event_id":"$x\ud800","room_id":"!r","sender":"@a","type":"t"}`,
		`{"event_id":"$x\ud83d\ude00\udc00","room_id":"!r","sender":"@a","type":"t"}`,
		`{` + ok + `,"x":` + strings.Repeat("[", 128) + strings.Repeat("]", 128) + `}`,
		`{` + ok + `,"c":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00\ud800"}`,
		`{` + ok + ",\"x\":\"\xff\"}",
		`{` + ok + ",\"x\":\"a\tb\"}",
		`{` + ok + `,"x":[[[[{"a":[1,2,{"b":null}]}]]]]}`,
		`{` + ok[:40],
		`{` + ok + `}x`,
		`{` + ok + `,}`,
		`[]`, `null`, `"x"`, `123`, `true`, ``, ` `, `{`, `{}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`,
		"\ufeff{}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := bytes.Clone(raw)
		ev, err := ParseEvent(raw)
		require.Equal(t, in, raw, "ParseEvent does not modify its input")
		fields, stateKey, refOK := refParseEvent(raw)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidEvent)
			var ierr *InvalidEventError
			require.True(t, errors.As(err, &ierr))
			require.Equal(t, 0, ierr.Index)
			require.False(t, refOK, "encoding/json accepts what ParseEvent rejected: %v", err)
			return
		}
		require.True(t, refOK, "encoding/json rejects what ParseEvent accepted")
		require.True(t, json.Valid(raw))
		require.True(t, utf8.Valid(raw))
		require.Equal(t, raw, []byte(ev.Raw))
		require.NotEmpty(t, ev.ID)
		require.NotEmpty(t, ev.RoomID)
		require.NotEmpty(t, ev.Sender)
		require.NotEmpty(t, ev.Type)
		require.Equal(t, fields["event_id"], ev.ID)
		require.Equal(t, fields["room_id"], ev.RoomID)
		require.Equal(t, fields["sender"], ev.Sender)
		require.Equal(t, fields["type"], ev.Type)
		require.Equal(t, stateKey, ev.StateKey)
		require.NoError(t, ev.validate(0))
	})
}

func BenchmarkValidateEvent(b *testing.B) {
	ev, err := ParseEvent([]byte(messageEvent))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.Raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ev.validate(0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEvent(b *testing.B) {
	raw := []byte(messageEvent)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateEventStdlib measures the alternative validate did not
// take: json.Valid, utf8.Valid and json.Unmarshal into a struct of the five
// fields (which would also match keys case-insensitively).
func BenchmarkValidateEventStdlib(b *testing.B) {
	ev, err := ParseEvent([]byte(messageEvent))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.Raw)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(ev.Raw) || !utf8.Valid(ev.Raw) {
			b.Fatal("invalid")
		}
		var f struct {
			EventID  *string `json:"event_id"`
			RoomID   *string `json:"room_id"`
			Sender   *string `json:"sender"`
			Type     *string `json:"type"`
			StateKey *string `json:"state_key"`
		}
		if err := json.Unmarshal(ev.Raw, &f); err != nil {
			b.Fatal(err)
		}
		if f.EventID == nil || *f.EventID != ev.ID || *f.RoomID != ev.RoomID || *f.Sender != ev.Sender || *f.Type != ev.Type || f.StateKey != nil {
			b.Fatal("mismatch")
		}
	}
}

func TestMessageEventIsAbout400Bytes(t *testing.T) {
	require.InDelta(t, 400, len(messageEvent), 60)
}

// TestLoneSurrogateIDsAreRefused checks that two events whose IDs differ
// only in a lone UTF-16 surrogate escape, which both decode to U+FFFD,
// cannot collapse into one: such a key is refused, by ParseEvent and by
// Enqueue's check of a hand-built Event, while a surrogate pair is a
// character like any other.
func TestLoneSurrogateIDsAreRefused(t *testing.T) {
	for _, c := range []struct{ key, value string }{
		{"event_id", `$x\ud800`},
		{"event_id", `$x\ud801`},
		{"event_id", `$x\udc00`},
		{"event_id", `$x\ud800\u0041`},
		{"event_id", `$x\ud800\ud800`},
		{"event_id", `\ude00$x`},
		{"room_id", `!r\udbff:hs`},
		{"sender", `@a\ud83d:hs`},
		{"type", `m.\uDFFF`},
		{"state_key", `\uD800`},
	} {
		fields := map[string]string{"event_id": "$1", "room_id": "!r:hs", "sender": "@a:hs", "type": "m.t"}
		fields[c.key] = c.value
		var b strings.Builder
		b.WriteString("{")
		for k, v := range fields {
			fmt.Fprintf(&b, "%q:\"%s\",", k, v)
		}
		b.WriteString(`"content":{}}`)
		raw := []byte(b.String())

		_, err := ParseEvent(raw)
		require.ErrorIs(t, err, ErrInvalidEvent, "%s", raw)
		require.ErrorContains(t, err, c.key)
		require.ErrorContains(t, err, "surrogate")

		var decoded map[string]string
		_ = json.Unmarshal(raw, &decoded) // decodes the lone surrogate as U+FFFD
		ev := Event{ID: decoded["event_id"], RoomID: decoded["room_id"], Sender: decoded["sender"], Type: decoded["type"], Raw: raw}
		if c.key == "state_key" {
			sk := decoded["state_key"]
			ev.StateKey = &sk
		}
		err = ev.validate(0)
		require.ErrorIs(t, err, ErrInvalidEvent, "%s", raw)
		require.ErrorContains(t, err, "surrogate")
	}

	ev, err := ParseEvent([]byte(`{"event_id":"$x\ud83d\ude00","room_id":"!r","sender":"@a","type":"t","x":"\ud800"}`))
	require.NoError(t, err, "a pair is a character; content is not checked")
	require.Equal(t, "$x😀", ev.ID)
	require.NoError(t, ev.validate(0))
}

// TestUndecodableEventsAreRefused checks that an event nested deeper than
// receivers decode once the transaction body wraps it, or holding a number
// no 64-bit float can hold, is refused at intake, in every kind of input:
// a transaction with it would be refused forever and block every
// transaction behind it.
func TestUndecodableEventsAreRefused(t *testing.T) {
	const base = `"event_id":"$1","room_id":"!r:hs","sender":"@a:hs","type":"m.t"`
	nest := func(levels int) string { return strings.Repeat("[", levels) + strings.Repeat("]", levels) }
	for name, c := range map[string]struct {
		x    string
		want string
	}{
		"10000 levels":        {nest(10000), "nested too deeply"},
		"129 levels":          {nest(128), "more than 128"},
		"1e999":               {"1e999", "out of range"},
		"-1e999":              {"[-1e999]", "out of range"},
		"2E+308":              {`{"a":2E+308}`, "out of range"},
		"a 400-digit integer": {"1" + strings.Repeat("0", 400), "out of range"},
		"1.8e308 in a list":   {"[0,1.8e308]", "out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			raw := []byte(`{` + base + `,"x":` + c.x + `}`)
			_, err := ParseEvent(raw)
			require.ErrorIs(t, err, ErrInvalidEvent)
			require.ErrorContains(t, err, c.want)
			ev := Event{ID: "$1", RoomID: "!r:hs", Sender: "@a:hs", Type: "m.t", Raw: raw}
			require.ErrorContains(t, ev.validate(0), c.want)

			_, err = ParseEphemeralEvent([]byte(`{"type":"m.typing","room_id":"!r:hs","content":{"x":` + c.x + `}}`))
			require.ErrorContains(t, err, c.want, "ephemeral")

			m := ToDeviceMessage{Sender: "@a:hs", Type: "m.t", ToUserID: "@b:hs", ToDeviceID: "D",
				Content: json.RawMessage(`{"x":` + c.x + `}`)}
			require.ErrorContains(t, m.validate(0), c.want, "to-device")
		})
	}
	for name, x := range map[string]string{
		"128 levels in all": nest(127),
		"the largest float": "1.7976931348623157e308",
		"underflow is zero": "1e-999",
		"a long integer":    "1" + strings.Repeat("0", 300),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseEvent([]byte(`{` + base + `,"x":` + x + `}`))
			require.NoError(t, err)
		})
	}
}

// refLoneSurrogate reports whether the JSON string v has a \u escape of a
// surrogate that utf16 does not decode as a pair with the next escape.
func refLoneSurrogate(v json.RawMessage) bool {
	s := string(v[1 : len(v)-1])
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if s[i+1] != 'u' {
			i++
			continue
		}
		n, _ := strconv.ParseUint(s[i+2:i+6], 16, 32)
		if r := rune(n); utf16.IsSurrogate(r) {
			if i+12 > len(s) || s[i+6:i+8] != `\u` {
				return true
			}
			n2, _ := strconv.ParseUint(s[i+8:i+12], 16, 32)
			if utf16.DecodeRune(r, rune(n2)) == unicode.ReplacementChar {
				return true
			}
			i += 6
		}
		i += 5
	}
	return false
}
