package eventjson

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/asdeliver/scheduler/internal/eventjson/eventjsontest"
	"github.com/stretchr/testify/require"
)

func TestHasSpecialByte(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			got := hasSpecialByte(binary.LittleEndian.Uint64(word))
			require.Equal(t, !plainStringByte[c], got, "byte %#x at %d", c, pos)
		}
	}
	// Two special bytes, or special bytes next to the extremes of plain ones.
	for _, w := range []string{"\x1f\x20\x21\x22\x5b\x5c\x5d\x7f", "        ", "~~~~~~~~", "\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f", "!#[]~ 09"} {
		want := false
		for i := range len(w) {
			want = want || !plainStringByte[w[i]]
		}
		require.Equal(t, want, hasSpecialByte(binary.LittleEndian.Uint64([]byte(w))), "%q", w)
	}
}

func TestScanFindsKeys(t *testing.T) {
	raw := []byte(` {"typ\u0065":"m.room.member","content":{"event_id":1},"state_key":"","sender":7,"room_id":"!r\/1"} `)
	var f Fields
	require.NoError(t, Scan(raw, &f))
	require.False(t, f.Has(EventID))
	require.True(t, f.IsString(Type))
	require.True(t, f.IsString(StateKey))
	require.True(t, f.Has(Sender))
	require.False(t, f.IsString(Sender))
	for k, want := range map[Key]string{Type: "m.room.member", StateKey: "", RoomID: "!r/1"} {
		requireValue(t, &f, raw, k, want)
	}
	_, err := f.Required(string(raw), StateKey)
	require.EqualError(t, err, "state_key is empty")
	_, err = f.Required(string(raw), Sender)
	require.EqualError(t, err, "sender is not a string")
	_, err = f.Required(string(raw), EventID)
	require.EqualError(t, err, "missing event_id")
}

// requireValue checks that the value of key k in raw, as f found it, is
// want.
func requireValue(t *testing.T, f *Fields, raw []byte, k Key, want string) {
	t.Helper()
	got, err := f.Value(string(raw), k)
	require.NoError(t, err)
	require.Equal(t, want, got, k.String())
	eq, err := f.Equal(raw, k, want)
	require.NoError(t, err)
	require.True(t, eq, k.String())
}

func TestCheckObject(t *testing.T) {
	require.NoError(t, CheckObject([]byte(` {"a":[1,{"b":null}]}`+"\n")))
	for raw, want := range map[string]string{
		"":           "empty: it must be a JSON object",
		" ":          "empty: it must be a JSON object",
		"[]":         "not a JSON object",
		`{"a":1}x`:   "invalid JSON: invalid character after top-level value at byte 7",
		`{"a":"\x"}`: "invalid JSON: invalid escape in string at byte 6",
	} {
		require.EqualError(t, CheckObject([]byte(raw)), want, "%q", raw)
	}
}

// reference is what Scan and CheckObject accept, written with
// encoding/json, slowly: whether data is one JSON object in valid UTF-8,
// whether it has one of the Keys twice, and the raw value of each it has.
func reference(data []byte) (object, dup bool, found map[Key]json.RawMessage) {
	if !json.Valid(data) || !utf8.Valid(data) || !eventjsontest.Decodable(data, MaxDepth) {
		return false, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false, false, nil
	}
	found = map[Key]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false, false, nil
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false, false, nil
		}
		for k := range NumKeys {
			if tok.(string) != k.String() {
				continue
			}
			if _, ok := found[k]; ok {
				return true, true, nil
			}
			found[k] = v
		}
	}
	return true, false, found
}

func FuzzScan(f *testing.F) {
	for _, seed := range []string{
		`{"event_id":"$1","room_id":"!r:hs","sender":"@a:hs","type":"m.room.message","content":{"body":"hi"}}`,
		`{"event\u005fid":"$1","EVENT_ID":2,"state_key":null,"sender":"\u0040a","sender":"@b"}`,
		`[{}]`, `{"a":[1,-0.5e+3,true,false,null,"\ud800"]}`, "{\"a\":\"\xff\"}", `{"a":01}`, ` { } `, `{`,
		`{"a":1e999}`, `{"a":[-1.8E308, 1e-999]}`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		object, dup, found := reference(data)
		require.Equal(t, object, CheckObject(data) == nil, "CheckObject")
		var fields Fields
		err := Scan(data, &fields)
		require.Equal(t, in, data, "Scan does not modify its input")
		if err != nil {
			require.False(t, object && !dup, "encoding/json accepts what Scan rejected: %v", err)
			return
		}
		require.True(t, object && !dup, "encoding/json rejects what Scan accepted")
		for k := range NumKeys {
			v, ok := found[k]
			require.Equal(t, ok, fields.Has(k), k.String())
			if !ok || v[0] != '"' {
				require.False(t, fields.IsString(k), k.String())
				continue
			}
			var want string
			require.NoError(t, json.Unmarshal(v, &want))
			if bytes.ContainsRune([]byte(want), utf8.RuneError) && hasLoneSurrogate(string(v)) {
				// Decoded to U+FFFD, as another spelling would be: refused.
				_, err := fields.Value(string(data), k)
				require.ErrorContains(t, err, "lone UTF-16 surrogate")
				_, err = fields.Equal(data, k, want)
				require.ErrorContains(t, err, "lone UTF-16 surrogate")
				continue
			}
			requireValue(t, &fields, data, k, want)
		}
	})
}

func TestValueRefusesLoneSurrogates(t *testing.T) {
	for _, c := range []struct {
		quoted string
		lone   bool
	}{
		{`"a"`, false}, {`"\u00e9"`, false}, {`"\ud83d\ude00"`, false}, {`"\\ud800"`, false}, {`"\ufffd"`, false},
		{`"\ud800"`, true}, {`"\udc00"`, true}, {`"\ud800x"`, true}, {`"\ud800\u0041"`, true},
		{`"\ud800\ud800"`, true}, {`"\ud83d\ude00\ude00"`, true}, {`"\\\ud800"`, true}, {`"\uDBFF\uDFFF"`, false},
	} {
		require.Equal(t, c.lone, hasLoneSurrogate(c.quoted), c.quoted)
	}
}
