package wire

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

func item(k store.Kind, data string) store.Item {
	return store.Item{Kind: k, Data: []byte(data)}
}

func ephemeral(data string) store.Item { return item(store.KindEphemeral, data) }

func toDevice(toUser, toDevice, typ, sender, content string) store.Item {
	return store.Item{Kind: store.KindToDevice, Data: EncodeToDevice(toUser, toDevice, typ, sender, []byte(content))}
}

func deviceLists(changed, left []string) store.Item {
	return store.Item{Kind: store.KindDeviceLists, Data: EncodeDeviceLists(changed, left)}
}

func keyCounts(user, device string, otk map[string]int, fallback []string) store.Item {
	return store.Item{Kind: store.KindKeyCounts, Data: EncodeKeyCounts(user, device, otk, fallback)}
}

func TestFormatFor(t *testing.T) {
	require.Equal(t, Format, FormatFor(0), "no flags: the events-only format")
	require.Equal(t, 1, Format)
	require.Equal(t, 2|1<<8, FormatFor(EphemeralStable))
	require.Equal(t, 2|2<<8, FormatFor(EphemeralUnstable))
	require.Equal(t, 2|4<<8, FormatFor(ToDevice))
	require.Equal(t, 2|8<<8, FormatFor(DeviceData))
	require.Equal(t, 2|15<<8, FormatFor(EphemeralStable|EphemeralUnstable|ToDevice|DeviceData))
	require.Equal(t, FormatFor(DeviceData), FormatFor(DeviceData|0x80), "undefined bits ignored")
	for f := Flags(0); f <= allFlags; f++ {
		got, err := flagsOf(FormatFor(f))
		require.NoError(t, err)
		require.Equal(t, f, got)
	}
}

func TestBodyRejectsFormatsFormatForNeverReturns(t *testing.T) {
	for _, format := range []int{0, -1, 3, 2, 2 | 16<<8, 2 | 0x80<<8, 1 | 1<<8, 3 | 1<<8, -(2 | 1<<8), 2 | 1<<8 | 1<<20} {
		_, err := Body(format, []store.Item{event(`{}`)})
		require.ErrorIs(t, err, ErrUnknownFormat, "format %#x", format)
	}
}

const (
	typing  = `{"type":"m.typing","room_id":"!r:hs","content":{"user_ids":["@a:hs"]}}`
	receipt = `{"type":"m.receipt","room_id":"!r:hs","content":{"$e":{"m.read":{"@a:hs":{"ts":1}}}}}`
	ev1     = `{"event_id":"$1","type":"m.room.message"}`
)

func TestBodyGoldenPerFlags(t *testing.T) {
	msg := toDevice("@bob:hs", "DEV", "m.room.encrypted", "@alice:hs", `{"ciphertext":"x"}`)
	const msgJSON = `{"to_user_id":"@bob:hs","to_device_id":"DEV","type":"m.room.encrypted","sender":"@alice:hs","content":{"ciphertext":"x"}}`
	all := []store.Item{event(ev1), ephemeral(typing), msg, ephemeral(receipt),
		deviceLists([]string{"@c:hs"}, nil), keyCounts("@bob:hs", "DEV", map[string]int{"signed_curve25519": 3}, []string{"signed_curve25519"})}
	const dl = `,"org.matrix.msc3202.device_lists":{"changed":["@c:hs"],"left":[]}`
	const otk = `{"@bob:hs":{"DEV":{"signed_curve25519":3}}}`
	const keys = `,"org.matrix.msc3202.device_one_time_key_counts":` + otk +
		`,"org.matrix.msc3202.device_one_time_keys_count":` + otk +
		`,"org.matrix.msc3202.device_unused_fallback_key_types":{"@bob:hs":{"DEV":["signed_curve25519"]}}`
	tests := []struct {
		name  string
		flags Flags
		items []store.Item
		want  string
	}{
		{"no flags: events only", 0, all, `{"events":[` + ev1 + `]}`},
		{"stable ephemeral", EphemeralStable, all,
			`{"events":[` + ev1 + `],"ephemeral":[` + typing + `,` + receipt + `]}`},
		{"unstable ephemeral", EphemeralUnstable, all,
			`{"events":[` + ev1 + `],"de.sorunome.msc2409.ephemeral":[` + typing + `,` + receipt + `]}`},
		{"both ephemeral: same content twice", EphemeralStable | EphemeralUnstable, all,
			`{"events":[` + ev1 + `],"ephemeral":[` + typing + `,` + receipt + `],"de.sorunome.msc2409.ephemeral":[` + typing + `,` + receipt + `]}`},
		{"to-device", ToDevice, all, `{"events":[` + ev1 + `],"de.sorunome.msc2409.to_device":[` + msgJSON + `]}`},
		{"stable ephemeral and to-device", EphemeralStable | ToDevice, all,
			`{"events":[` + ev1 + `],"ephemeral":[` + typing + `,` + receipt + `],"de.sorunome.msc2409.to_device":[` + msgJSON + `]}`},
		{"device data", DeviceData, all, `{"events":[` + ev1 + `]` + dl + keys + `}`},
		{"everything", allFlags, all,
			`{"events":[` + ev1 + `],"ephemeral":[` + typing + `,` + receipt + `],"de.sorunome.msc2409.ephemeral":[` + typing + `,` + receipt +
				`],"de.sorunome.msc2409.to_device":[` + msgJSON + `]` + dl + keys + `}`},
		{"only ephemeral: events is []", EphemeralStable, []store.Item{ephemeral(typing)},
			`{"events":[],"ephemeral":[` + typing + `]}`},
		{"only to-device: events is []", allFlags, []store.Item{msg}, `{"events":[],"de.sorunome.msc2409.to_device":[` + msgJSON + `]}`},
		{"flags without content: no keys", allFlags, []store.Item{event(ev1)}, `{"events":[` + ev1 + `]}`},
		{"nothing at all", allFlags, nil, `{"events":[]}`},
		{"only one-time key counts", DeviceData, []store.Item{keyCounts("@bob:hs", "DEV", map[string]int{}, nil)},
			`{"events":[],"org.matrix.msc3202.device_one_time_key_counts":{"@bob:hs":{"DEV":{}}},"org.matrix.msc3202.device_one_time_keys_count":{"@bob:hs":{"DEV":{}}}}`},
		{"only fallback key types", DeviceData, []store.Item{keyCounts("@bob:hs", "DEV", nil, []string{})},
			`{"events":[],"org.matrix.msc3202.device_unused_fallback_key_types":{"@bob:hs":{"DEV":[]}}}`},
		{"only device lists", DeviceData, []store.Item{deviceLists(nil, []string{"@gone:hs"})},
			`{"events":[],"org.matrix.msc3202.device_lists":{"changed":[],"left":["@gone:hs"]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Body(FormatFor(tt.flags), tt.items)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
			require.Equal(t, len(got), cap(got), "length precomputed exactly")
			require.True(t, json.Valid(got))
		})
	}
}

func TestBodyMergesDeviceListsLaterWins(t *testing.T) {
	items := []store.Item{
		deviceLists([]string{"@z:hs", "@a:hs", "@m:hs"}, []string{"@left:hs"}),
		event(ev1),
		deviceLists([]string{"@left:hs"}, []string{"@a:hs"}), // @left back to changed, @a to left
		deviceLists(nil, []string{"@m:hs", "@z:hs"}),
		deviceLists([]string{"@z:hs", "@b:hs", "@b:hs"}, nil), // @z changed again
	}
	got, err := Body(FormatFor(DeviceData), items)
	require.NoError(t, err)
	require.Equal(t, `{"events":[`+ev1+`],"org.matrix.msc3202.device_lists":{"changed":["@b:hs","@left:hs","@z:hs"],"left":["@a:hs","@m:hs"]}}`, string(got))
}

func TestBodyMergesKeyCountsLaterWinsPerDevice(t *testing.T) {
	items := []store.Item{
		keyCounts("@u:hs", "A", map[string]int{"signed_curve25519": 10, "curve25519": 1}, []string{"signed_curve25519"}),
		keyCounts("@u:hs", "B", map[string]int{"signed_curve25519": 5}, nil),
		keyCounts("@t:hs", "X", map[string]int{"signed_curve25519": 0}, []string{}),
		keyCounts("@u:hs", "A", map[string]int{"signed_curve25519": 9}, nil), // counts replaced, fallback kept
		keyCounts("@u:hs", "B", nil, []string{"signed_curve25519"}),          // fallback added, counts kept
	}
	got, err := Body(FormatFor(DeviceData), items)
	require.NoError(t, err)
	const otk = `{"@t:hs":{"X":{"signed_curve25519":0}},"@u:hs":{"A":{"signed_curve25519":9},"B":{"signed_curve25519":5}}}`
	require.Equal(t, `{"events":[]`+
		`,"org.matrix.msc3202.device_one_time_key_counts":`+otk+
		`,"org.matrix.msc3202.device_one_time_keys_count":`+otk+
		`,"org.matrix.msc3202.device_unused_fallback_key_types":{"@t:hs":{"X":[]},"@u:hs":{"A":["signed_curve25519"],"B":["signed_curve25519"]}}}`,
		string(got))
}

func TestBodyWithDeviceDataIsDeterministic(t *testing.T) {
	var items []store.Item
	for i := range 50 {
		user := fmt.Sprintf("@user%02d:hs", 49-i)
		items = append(items,
			keyCounts(user, fmt.Sprintf("D%d", i%7), map[string]int{"a": i, "b": i * 2, "c": 1}, []string{"b", "a"}),
			deviceLists([]string{user}, []string{fmt.Sprintf("@gone%d:hs", i)}),
			ephemeral(typing))
	}
	first, err := Body(FormatFor(allFlags), items)
	require.NoError(t, err)
	for range 20 { // map iteration order differs from run to run
		again, err := Body(FormatFor(allFlags), items)
		require.NoError(t, err)
		require.Equal(t, string(first), string(again))
	}
	var parsed map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(first, &parsed))
	require.ElementsMatch(t, []string{"events", "ephemeral", "de.sorunome.msc2409.ephemeral",
		"org.matrix.msc3202.device_lists", "org.matrix.msc3202.device_one_time_key_counts",
		"org.matrix.msc3202.device_one_time_keys_count", "org.matrix.msc3202.device_unused_fallback_key_types"},
		sortedKeys(parsed), "no to-device content, so no to_device key")
}

func TestBodyRejectsUnreadableDeviceData(t *testing.T) {
	for _, it := range []store.Item{
		item(store.KindDeviceLists, `not json`),
		item(store.KindDeviceLists, `{"changed":"@a:hs"}`),
		item(store.KindDeviceLists, `{"changed":[""]}`),
		item(store.KindKeyCounts, `{"user_id":"@u:hs","device_id":"D"}`), // says nothing
		item(store.KindKeyCounts, `{"device_id":"D","one_time_key_counts":{}}`),
		item(store.KindKeyCounts, `{"user_id":"@u:hs","device_id":"D","one_time_key_counts":{"a":"1"}}`),
		item(store.KindKeyCounts, `{"user_id":"@u:hs","device_id":"D","unused_fallback_key_types":[""]}`),
	} {
		_, err := Body(FormatFor(DeviceData), []store.Item{event(`{}`), it})
		require.ErrorIs(t, err, ErrInvalidItem, "%s", it.Data)
		require.Contains(t, err.Error(), "item 1")

		// Without the flag the item is left out, unread.
		got, err := Body(FormatFor(EphemeralStable), []store.Item{event(`{}`), it})
		require.NoError(t, err)
		require.Equal(t, `{"events":[{}]}`, string(got))
	}
	for _, it := range []store.Item{ephemeral(``), ephemeral(`[]`), item(store.KindToDevice, `"x"`)} {
		_, err := Body(FormatFor(allFlags), []store.Item{it})
		require.ErrorIs(t, err, ErrInvalidItem, "%s", it.Data)
	}
}

func TestEncoders(t *testing.T) {
	require.Equal(t, `{"to_user_id":"@b\"ob:hs","to_device_id":"D\\1","type":"t\n","sender":"@a:hs","content":{ "k" : 1 }}`,
		string(EncodeToDevice("@b\"ob:hs", `D\1`, "t\n", "@a:hs", []byte(`{ "k" : 1 }`))), "content verbatim")
	require.Equal(t, `{"changed":["@a:hs","@b:hs"],"left":[]}`, string(EncodeDeviceLists([]string{"@b:hs", "@a:hs", "@b:hs"}, nil)))
	require.Equal(t, `{"user_id":"@u:hs","device_id":"D","one_time_key_counts":{"a":1,"b":-2},"unused_fallback_key_types":["z","a"]}`,
		string(EncodeKeyCounts("@u:hs", "D", map[string]int{"b": -2, "a": 1}, []string{"z", "a"})))
	require.Equal(t, `{"user_id":"@u:hs","device_id":"D"}`, string(EncodeKeyCounts("@u:hs", "D", nil, nil)))
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":                   `""`,
		"plain @u:hs":        `"plain @u:hs"`,
		"q\"b\\":             `"q\"b\\"`,
		"\n\r\t\x00\x1f\x7f": `"\n\r\t\u0000\u001f` + "\x7f" + `"`,
		"é ☃ 🎉 <&>":          `"é ☃ 🎉 <&>"`,
		"bad \xff\xc3(":      `"bad ` + "\ufffd\ufffd" + `("`,
	} {
		got := appendString(nil, in)
		require.Equal(t, want, string(got), "%q", in)
		var back string
		require.NoError(t, json.Unmarshal(got, &back))
	}
}
