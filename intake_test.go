package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

func TestParseEphemeralEvent(t *testing.T) {
	valid := []struct {
		raw             string
		typ, room, user string
	}{
		{`{"type":"m.typing","room_id":"!r:hs","content":{"user_ids":[]}}`, "m.typing", "!r:hs", ""},
		{`{"type":"m.receipt","room_id":"!r:hs","content":{}}`, "m.receipt", "!r:hs", ""},
		{` {"content":{"presence":"online"},"sender":"@a:hs","type":"m.presence"} `, "m.presence", "", "@a:hs"},
		{`{"type":"m.typing","room_id":"!\u0072:hs","content":{}}`, "m.typing", "!r:hs", ""},
	}
	for _, v := range valid {
		raw := []byte(v.raw)
		ev, err := ParseEphemeralEvent(raw)
		require.NoError(t, err, v.raw)
		assert.Equal(t, EphemeralEvent{Type: v.typ, RoomID: v.room, UserID: v.user, Raw: json.RawMessage(v.raw)}, ev)
		raw[0] = 'X'
		assert.Equal(t, v.raw, string(ev.Raw), "Raw is a copy")
	}

	invalid := map[string]string{
		"not JSON":                  `{"type":`,
		"not an object":             `["m.typing"]`,
		"invalid UTF-8":             "{\"type\":\"m.typing\",\"room_id\":\"!r\xff\",\"content\":{}}",
		"no type":                   `{"room_id":"!r:hs","content":{}}`,
		"type not a string":         `{"type":1,"room_id":"!r:hs","content":{}}`,
		"unknown type":              `{"type":"m.room.message","room_id":"!r:hs","content":{}}`,
		"typing without room_id":    `{"type":"m.typing","content":{}}`,
		"receipt with empty room":   `{"type":"m.receipt","room_id":"","content":{}}`,
		"presence without sender":   `{"type":"m.presence","content":{}}`,
		"presence of a non-user":    `{"type":"m.presence","sender":"alice","content":{}}`,
		"no content":                `{"type":"m.typing","room_id":"!r:hs"}`,
		"content not an object":     `{"type":"m.typing","room_id":"!r:hs","content":[]}`,
		"type twice":                `{"type":"m.typing","type":"m.presence","room_id":"!r:hs","content":{}}`,
		"trailing garbage":          `{"type":"m.typing","room_id":"!r:hs","content":{}} x`,
		"empty":                     ``,
		"nested content not closed": `{"type":"m.typing","room_id":"!r:hs","content":{"a":[}}`,
	}
	for name, raw := range invalid {
		t.Run(name, func(t *testing.T) {
			_, err := ParseEphemeralEvent([]byte(raw))
			require.ErrorIs(t, err, ErrInvalidEphemeral)
			var ie *InvalidInputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, 0, ie.Index)
			assert.NotEmpty(t, ie.Reason)
		})
	}
}

func TestIntakeRejectsInvalidInputAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, withFlags(reg("a", as, "@.*"), true, true, true))
	cfg.Rooms = fakeDirectory{}
	cfg.MaxTxnBytes = 400
	cfg.MaxPoolBytes = 4000
	s := start(t, cfg)

	okTyping := typingIn(t, "!r:example.org", "ok")
	mismatched := typingIn(t, "!r:example.org", "x")
	mismatched.RoomID = "!other:example.org"
	withUser := typingIn(t, "!r:example.org", "x")
	withUser.UserID = "@a:example.org"
	presence := presenceOf(t, "@a:example.org", "x")
	presence.RoomID = "!r:example.org"
	big := typingIn(t, "!r:example.org", strings.Repeat("b", 400))
	okMsg := toDeviceFor("@bob:example.org", "ok")
	msg := func(change func(*ToDeviceMessage)) ToDeviceMessage {
		m := toDeviceFor("@bob:example.org", "x")
		change(&m)
		return m
	}
	okCounts := DeviceKeyCounts{UserID: "@bob:example.org", DeviceID: "D", OneTimeKeyCounts: map[string]int{"signed_curve25519": 1}}

	cases := []struct {
		name  string
		call  func() error
		kind  error
		index int
	}{
		{"ephemeral: fields disagree with Raw", func() error { return s.EnqueueEphemeral(ctx, okTyping, mismatched) }, ErrInvalidEphemeral, 1},
		{"ephemeral: UserID on typing", func() error { return s.EnqueueEphemeral(ctx, okTyping, withUser) }, ErrInvalidEphemeral, 1},
		{"ephemeral: RoomID on presence", func() error { return s.EnqueueEphemeral(ctx, presence) }, ErrInvalidEphemeral, 0},
		{"ephemeral: no type", func() error {
			return s.EnqueueEphemeral(ctx, okTyping, EphemeralEvent{RoomID: "!r", Raw: okTyping.Raw})
		}, ErrInvalidEphemeral, 1},
		{"ephemeral: no Raw", func() error {
			return s.EnqueueEphemeral(ctx, EphemeralEvent{Type: "m.typing", RoomID: "!r:example.org"})
		}, ErrInvalidEphemeral, 0},
		{"ephemeral: larger than MaxTxnBytes", func() error { return s.EnqueueEphemeral(ctx, okTyping, big) }, ErrInvalidEphemeral, 1},
		{"to-device: no sender", func() error { return s.EnqueueToDevice(ctx, okMsg, msg(func(m *ToDeviceMessage) { m.Sender = "" })) }, ErrInvalidToDevice, 1},
		{"to-device: no type", func() error { return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.Type = "" })) }, ErrInvalidToDevice, 0},
		{"to-device: recipient not a user ID", func() error {
			return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.ToUserID = "bob" }))
		}, ErrInvalidToDevice, 0},
		{"to-device: no device", func() error { return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.ToDeviceID = "" })) }, ErrInvalidToDevice, 0},
		{"to-device: content not an object", func() error {
			return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.Content = json.RawMessage(`[1]`) }))
		}, ErrInvalidToDevice, 0},
		{"to-device: content not JSON", func() error {
			return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.Content = json.RawMessage(`{"a":}`) }))
		}, ErrInvalidToDevice, 0},
		{"to-device: no content", func() error { return s.EnqueueToDevice(ctx, msg(func(m *ToDeviceMessage) { m.Content = nil })) }, ErrInvalidToDevice, 0},
		{"to-device: larger than MaxTxnBytes", func() error {
			return s.EnqueueToDevice(ctx, okMsg, msg(func(m *ToDeviceMessage) { m.Content = json.RawMessage(`{"x":"` + strings.Repeat("x", 400) + `"}`) }))
		}, ErrInvalidToDevice, 1},
		{"device lists: not a user ID", func() error {
			return s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: []string{"@a:example.org", "nobody"}})
		}, ErrInvalidDeviceLists, 0},
		{"device lists: user in both lists", func() error {
			return s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: []string{"@a:example.org"}, Left: []string{"@b:example.org", "@a:example.org"}})
		}, ErrInvalidDeviceLists, 0},
		{"key counts: says nothing", func() error {
			return s.EnqueueDeviceKeyCounts(ctx, okCounts, DeviceKeyCounts{UserID: "@bob:example.org", DeviceID: "D"})
		}, ErrInvalidKeyCounts, 1},
		{"key counts: no device", func() error {
			return s.EnqueueDeviceKeyCounts(ctx, DeviceKeyCounts{UserID: "@bob:example.org", UnusedFallbackKeyTypes: []string{}})
		}, ErrInvalidKeyCounts, 0},
		{"key counts: negative count", func() error {
			return s.EnqueueDeviceKeyCounts(ctx, DeviceKeyCounts{UserID: "@bob:example.org", DeviceID: "D", OneTimeKeyCounts: map[string]int{"a": -1}})
		}, ErrInvalidKeyCounts, 0},
		{"key counts: empty fallback type", func() error {
			return s.EnqueueDeviceKeyCounts(ctx, DeviceKeyCounts{UserID: "@bob:example.org", DeviceID: "D", UnusedFallbackKeyTypes: []string{""}})
		}, ErrInvalidKeyCounts, 0},
		{"key counts: not a user ID", func() error {
			return s.EnqueueDeviceKeyCounts(ctx, DeviceKeyCounts{UserID: "@bob", DeviceID: "D", OneTimeKeyCounts: map[string]int{}})
		}, ErrInvalidKeyCounts, 0},
	}
	sentinels := []error{ErrInvalidEphemeral, ErrInvalidToDevice, ErrInvalidDeviceLists, ErrInvalidKeyCounts, ErrInvalidEvent}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			var ie *InvalidInputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, c.index, ie.Index)
			for _, other := range sentinels {
				assert.Equal(t, other == c.kind, errors.Is(err, other), "errors.Is(%v, %v)", err, other)
			}
		})
	}
	bl, err := cfg.Store.Backlogs(ctx)
	require.NoError(t, err)
	assert.Empty(t, bl, "no invalid call stored anything")
}

func TestIntakeLifecycleErrors(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	s, err := New(testConfig(t, withFlags(reg("a", as, "@.*"), true, false, true)))
	require.NoError(t, err)
	calls := map[string]func() error{
		"EnqueueEphemeral": func() error { return s.EnqueueEphemeral(ctx, typingIn(t, "!r:example.org", "m")) },
		"EnqueueToDevice":  func() error { return s.EnqueueToDevice(ctx, toDeviceFor("@b:example.org", "m")) },
		"EnqueueDeviceLists": func() error {
			return s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: []string{"@b:example.org"}})
		},
		"EnqueueDeviceKeyCounts": func() error {
			return s.EnqueueDeviceKeyCounts(ctx, DeviceKeyCounts{UserID: "@b:example.org", DeviceID: "D", OneTimeKeyCounts: map[string]int{}})
		},
		"Ping": func() error {
			_, err := s.Ping(ctx, "a", "p")
			return err
		},
	}
	for name, call := range calls {
		assert.ErrorIs(t, call(), ErrNotStarted, name)
	}
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Stop(ctx))
	for name, call := range calls {
		assert.ErrorIs(t, call(), ErrStopped, name)
	}
}

func TestIntakeCallLargerThanThePoolIsRefused(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, withFlags(reg("a", as, "@.*"), true, false, true))
	cfg.MaxPoolEvents = 2
	s := start(t, cfg)
	typing := typingIn(t, "!r:example.org", "m")
	msg := toDeviceFor("@b:example.org", "m")
	counts := DeviceKeyCounts{UserID: "@b:example.org", DeviceID: "D", OneTimeKeyCounts: map[string]int{}}
	assert.ErrorIs(t, s.EnqueueEphemeral(ctx, typing, typing, typing), ErrBatchTooLarge)
	assert.ErrorIs(t, s.EnqueueToDevice(ctx, msg, msg, msg), ErrBatchTooLarge)
	assert.ErrorIs(t, s.EnqueueDeviceKeyCounts(ctx, counts, counts, counts), ErrBatchTooLarge)
	assert.ErrorIs(t, s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: []string{"@a:hs", "@b:hs"}, Left: []string{"@c:hs"}}), ErrBatchTooLarge)
	bl, err := cfg.Store.Backlogs(ctx)
	require.NoError(t, err)
	assert.Empty(t, bl)

	// Empty calls are no-ops.
	require.NoError(t, s.EnqueueEphemeral(ctx))
	require.NoError(t, s.EnqueueToDevice(ctx))
	require.NoError(t, s.EnqueueDeviceKeyCounts(ctx))
	require.NoError(t, s.EnqueueDeviceLists(ctx, DeviceListChanges{}))
}
