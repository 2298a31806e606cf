package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

func event(data string) store.Item {
	return store.Item{Kind: store.KindEvent, Key: "$x", Data: []byte(data)}
}

func TestBodyGolden(t *testing.T) {
	tests := []struct {
		name  string
		items []store.Item
		want  string
	}{
		{"nil items", nil, `{"events":[]}`},
		{"no items", []store.Item{}, `{"events":[]}`},
		{"one item", []store.Item{event(`{"a":1}`)}, `{"events":[{"a":1}]}`},
		{
			"many items kept verbatim",
			[]store.Item{
				event(`{"a":1}`),
				// White space, escapes and key order survive: no re-encoding.
				event(" {\"b\" : \"\\u00e9\\n\\u2028\", \"a\":0 }\n"),
				event(`{"content":{"body":"é ☃ <&>"}}`),
			},
			"{\"events\":[{\"a\":1}, {\"b\" : \"\\u00e9\\n\\u2028\", \"a\":0 }\n,{\"content\":{\"body\":\"é ☃ <&>\"}}]}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Body(Format, tt.items)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
			require.Equal(t, len(got), cap(got), "length precomputed exactly")
			var parsed struct {
				Events []json.RawMessage `json:"events"`
			}
			require.NoError(t, json.Unmarshal(got, &parsed))
			require.Len(t, parsed.Events, len(tt.items))
		})
	}
}

func TestBodyIsDeterministicAndOwnsItsBytes(t *testing.T) {
	items := []store.Item{event(`{"a":1}`), event(`{"b":2}`)}
	first, err := Body(Format, items)
	require.NoError(t, err)
	second, err := Body(Format, items)
	require.NoError(t, err)
	require.Equal(t, first, second)

	want := string(first)
	items[0].Data[2] = 'z' // the caller reuses its buffers
	second[0] = 'x'
	require.Equal(t, want, string(first), "a body shares no memory with the items or another body")
}

func TestBodyRejectsUnknownFormat(t *testing.T) {
	for _, format := range []int{0, Format + 1, -1} {
		_, err := Body(format, []store.Item{event(`{}`)})
		require.ErrorIs(t, err, ErrUnknownFormat, "format %d", format)
	}
}

func TestBodyRejectsInvalidItems(t *testing.T) {
	tests := []struct {
		name string
		item store.Item
	}{
		{"kind zero", store.Item{Data: []byte(`{}`)}},
		{"unknown kind", store.Item{Kind: 99, Data: []byte(`{}`)}},
		{"no data", event(``)},
		{"white space", event(" \n\t")},
		{"a lone brace", event(`{`)},
		{"truncated", event(`{"a":1`)},
		{"array", event(`[{}]`)},
		{"string", event(`"{}"`)},
		{"null", event(`null`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Body(Format, []store.Item{event(`{"ok":1}`), tt.item})
			require.ErrorIs(t, err, ErrInvalidItem)
			require.Contains(t, err.Error(), "item 1")
		})
	}
}

func TestBodyAllocatesOnce(t *testing.T) {
	items := benchItems(100)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Body(Format, items); err != nil {
			panic(err)
		}
	})
	require.Equal(t, 1.0, allocs)
}

// benchItems returns n events of about 400 bytes each, as a homeserver
// would enqueue them.
func benchItems(n int) []store.Item {
	items := make([]store.Item, n)
	for i := range items {
		id := fmt.Sprintf("$event%06d:example.org", i)
		data := fmt.Sprintf(`{"event_id":%q,"room_id":"!room:example.org","sender":"@alice:example.org",`+
			`"type":"m.room.message","origin_server_ts":1700000000000,"unsigned":{"age":1234},`+
			`"content":{"msgtype":"m.text","body":%q}}`, id, strings.Repeat("hello world ", 20))
		items[i] = store.Item{Seq: int64(i + 1), Kind: store.KindEvent, Key: id, Data: []byte(data)}
	}
	return items
}

func BenchmarkBody(b *testing.B) {
	items := benchItems(100)
	size := 0
	for _, it := range items {
		size += len(it.Data)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Body(Format, items); err != nil {
			b.Fatal(err)
		}
	}
}
