package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/asdeliver/scheduler"
)

// traffic is what the homeserver enqueues in a test, and what of it the AS
// must be handed: the Want lists keep enqueue order.
type traffic struct {
	Events      []scheduler.Event
	Ephemeral   []scheduler.EphemeralEvent
	ToDevice    []scheduler.ToDeviceMessage
	DeviceLists []scheduler.DeviceListChanges
	KeyCounts   []scheduler.DeviceKeyCounts

	WantEvents    []scheduler.Event
	WantEphemeral []scheduler.EphemeralEvent
	WantToDevice  []scheduler.ToDeviceMessage
	WantChanged   []string // sorted
	WantLeft      []string // sorted
	WantOTKs      []otkCount
	WantFallback  map[string]map[string][]string // user → device → algorithms
}

// otkCount is one device's one-time key counts as mautrix hands them over
// (mautrix.OTKCount knows curve25519 and signed_curve25519 only).
type otkCount struct {
	User, Device                 string
	Curve25519, SignedCurve25519 int
}

// newTraffic builds n events, ephemeral events and to-device messages
// (prefix keeps IDs apart between tests), about a tenth of each for what the
// AS is not interested in, and fixed device-list changes and key counts.
func newTraffic(t *testing.T, prefix string, nEvents, nEphemeral, nToDevice int) *traffic {
	t.Helper()
	tr := &traffic{}
	for i := range nEvents {
		ev, wanted := roomEvent(t, prefix, i)
		tr.Events = append(tr.Events, ev)
		if wanted {
			tr.WantEvents = append(tr.WantEvents, ev)
		}
	}
	for i := range nEphemeral {
		ev, wanted := ephemeralEvent(t, prefix, i)
		tr.Ephemeral = append(tr.Ephemeral, ev)
		if wanted {
			tr.WantEphemeral = append(tr.WantEphemeral, ev)
		}
	}
	for i := range nToDevice {
		msg, wanted := toDeviceMessage(t, prefix, i)
		tr.ToDevice = append(tr.ToDevice, msg)
		if wanted {
			tr.WantToDevice = append(tr.WantToDevice, msg)
		}
	}

	// carol shares no room the AS cares about: she is left out.
	tr.DeviceLists = []scheduler.DeviceListChanges{
		{Changed: []string{ghost1, alice, carol}},
		{Left: []string{ghost2}},
		{Changed: []string{ghost3}, Left: []string{ghost4}},
	}
	tr.WantChanged = []string{alice, ghost1, ghost3}
	tr.WantLeft = []string{ghost2, ghost4}

	// Key counts go only to the service whose users they are: not alice's.
	tr.KeyCounts = []scheduler.DeviceKeyCounts{
		{UserID: ghost1, DeviceID: "GHOST1DEV", OneTimeKeyCounts: map[string]int{"signed_curve25519": 42, "curve25519": 7}, UnusedFallbackKeyTypes: []string{"signed_curve25519"}},
		{UserID: alice, DeviceID: "ALICEDEV", OneTimeKeyCounts: map[string]int{"signed_curve25519": 5}},
		{UserID: ghost2, DeviceID: "GHOST2DEV", OneTimeKeyCounts: map[string]int{"signed_curve25519": 0}, UnusedFallbackKeyTypes: []string{}},
		{UserID: bot, DeviceID: "BOTDEV", OneTimeKeyCounts: map[string]int{"signed_curve25519": 50}, UnusedFallbackKeyTypes: []string{"signed_curve25519"}},
	}
	tr.WantOTKs = []otkCount{
		{User: bot, Device: "BOTDEV", SignedCurve25519: 50},
		{User: ghost1, Device: "GHOST1DEV", Curve25519: 7, SignedCurve25519: 42},
		{User: ghost2, Device: "GHOST2DEV"},
	}
	tr.WantFallback = map[string]map[string][]string{
		bot:    {"BOTDEV": {"signed_curve25519"}},
		ghost1: {"GHOST1DEV": {"signed_curve25519"}},
		ghost2: {"GHOST2DEV": {}},
	}
	return tr
}

// enqueue hands round r of rounds to the scheduler: a slice of each list,
// and the r-th device-list summary and key count, if any.
func (tr *traffic) enqueue(t *testing.T, h *homeserver, r, rounds int) {
	t.Helper()
	ctx := context.Background()
	part := func(n int) (int, int) { return n * r / rounds, n * (r + 1) / rounds }

	if lo, hi := part(len(tr.Events)); lo < hi {
		require.NoError(t, h.Enqueue(ctx, tr.Events[lo:hi]...))
	}
	if lo, hi := part(len(tr.Ephemeral)); lo < hi {
		require.NoError(t, h.EnqueueEphemeral(ctx, tr.Ephemeral[lo:hi]...))
	}
	if lo, hi := part(len(tr.ToDevice)); lo < hi {
		require.NoError(t, h.EnqueueToDevice(ctx, tr.ToDevice[lo:hi]...))
	}
	if r < len(tr.DeviceLists) {
		require.NoError(t, h.EnqueueDeviceLists(ctx, tr.DeviceLists[r]))
	}
	if r < len(tr.KeyCounts) {
		require.NoError(t, h.EnqueueDeviceKeyCounts(ctx, tr.KeyCounts[r]))
	}
}

// enqueueAll hands everything to the scheduler in rounds calls of each
// kind, interleaved.
func (tr *traffic) enqueueAll(t *testing.T, h *homeserver, rounds int) {
	t.Helper()
	rounds = max(rounds, len(tr.DeviceLists), len(tr.KeyCounts))
	for r := range rounds {
		tr.enqueue(t, h, r, rounds)
	}
}

// complete reports whether the application has been handed at least as
// much of each kind as it is owed.
func (tr *traffic) complete(got received) bool {
	var changed, left int
	for _, dl := range got.DeviceLists {
		changed += len(dl.Changed)
		left += len(dl.Left)
	}
	return len(got.Events) >= len(tr.WantEvents) &&
		len(got.Ephemeral) >= len(tr.WantEphemeral) &&
		len(got.ToDevice) >= len(tr.WantToDevice) &&
		changed >= len(tr.WantChanged) && left >= len(tr.WantLeft) &&
		len(got.OTKs) >= len(tr.WantOTKs)
}

// check asserts that the application was handed exactly what it is owed:
// each item once, intact, and each kind in enqueue order.
func (tr *traffic) check(t *testing.T, got received) {
	t.Helper()

	// Room events: the same IDs in the same order, then each one's fields.
	wantIDs := make([]string, len(tr.WantEvents))
	for i, ev := range tr.WantEvents {
		wantIDs[i] = ev.ID
	}
	gotIDs := make([]string, len(got.Events))
	for i, ev := range got.Events {
		gotIDs[i] = ev.ID.String()
	}
	require.Equal(t, wantIDs, gotIDs, "room events handed to the application (IDs, in order)")
	for i, want := range tr.WantEvents {
		checkRoomEvent(t, want, got.Events[i])
	}

	// Ephemeral events: the same sequence, each compared in full.
	wantEph := make([]string, len(tr.WantEphemeral))
	for i, ev := range tr.WantEphemeral {
		var w struct {
			Type    string          `json:"type"`
			RoomID  string          `json:"room_id"`
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		}
		require.NoError(t, json.Unmarshal(ev.Raw, &w))
		wantEph[i] = describe(w.Type, w.RoomID, w.Sender, "", "", w.Content)
	}
	gotEph := make([]string, len(got.Ephemeral))
	for i, ev := range got.Ephemeral {
		gotEph[i] = describe(ev.Type.Type, ev.RoomID.String(), ev.Sender.String(), "", "", ev.Content.VeryRaw)
	}
	require.Equal(t, wantEph, gotEph, "ephemeral events handed to the application (in order)")
	for i, want := range tr.WantEphemeral {
		checkEphemeral(t, want, got.Ephemeral[i])
	}

	// To-device messages: the same sequence, recipient included.
	wantTD := make([]string, len(tr.WantToDevice))
	for i, msg := range tr.WantToDevice {
		wantTD[i] = describe(msg.Type, "", msg.Sender, msg.ToUserID, msg.ToDeviceID, msg.Content)
	}
	gotTD := make([]string, len(got.ToDevice))
	for i, ev := range got.ToDevice {
		gotTD[i] = describe(ev.Type.Type, ev.RoomID.String(), ev.Sender.String(), ev.ToUserID.String(), ev.ToDeviceID.String(), ev.Content.VeryRaw)
	}
	require.Equal(t, wantTD, gotTD, "to-device messages handed to the application (in order)")
	for i, want := range tr.WantToDevice {
		checkToDevice(t, want, got.ToDevice[i])
	}

	// Device lists: mautrix hands each transaction's lists to a handler
	// goroutine of its own, so their order is not observable; each user
	// must come once, on the right side.
	var changed, left []string
	for _, dl := range got.DeviceLists {
		for _, u := range dl.Changed {
			changed = append(changed, u.String())
		}
		for _, u := range dl.Left {
			left = append(left, u.String())
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	require.Equal(t, tr.WantChanged, changed, "device lists: changed")
	require.Equal(t, tr.WantLeft, left, "device lists: left")

	// One-time key counts: one per device, in any order (handler
	// goroutines again).
	otks := make([]otkCount, len(got.OTKs))
	for i, o := range got.OTKs {
		otks[i] = otkCount{User: o.UserID.String(), Device: o.DeviceID.String(), Curve25519: o.Curve25519, SignedCurve25519: o.SignedCurve25519}
	}
	byDevice := func(a, b otkCount) int {
		return strings.Compare(a.User+"|"+a.Device, b.User+"|"+b.Device)
	}
	want := slices.SortedFunc(slices.Values(tr.WantOTKs), byDevice)
	slices.SortFunc(otks, byDevice)
	require.Equal(t, want, otks, "one-time key counts")
}

// checkFallback asserts that the unused fallback key types in the bodies
// mautrix accepted, decoded with mautrix's appservice.Transaction type,
// are those owed. mautrix v0.32.0 decodes them but hands them to no
// channel or handler (appservice/http.go, handleTransaction), so this is
// as far as they can be followed.
func (tr *traffic) checkFallback(t *testing.T, puts []put) {
	t.Helper()
	got := map[string]map[string][]string{}
	seen := map[string]bool{}
	for _, p := range puts {
		if p.MautrixStatus != 200 || seen[p.TxnID] {
			continue
		}
		seen[p.TxnID] = true
		require.Nil(t, p.Txn.FallbackKeys, "stable device_unused_fallback_key_types: asdeliver sends only the unstable name")
		for user, devices := range p.Txn.MSC3202FallbackKeys {
			for device, algs := range devices {
				if got[user.String()] == nil {
					got[user.String()] = map[string][]string{}
				}
				_, dup := got[user.String()][device.String()]
				require.False(t, dup, "fallback key types of %s %s in two transactions", user, device)
				list := []string{}
				for _, a := range algs {
					list = append(list, string(a))
				}
				got[user.String()][device.String()] = list
			}
		}
	}
	require.Equal(t, tr.WantFallback, got, "unused fallback key types, as mautrix's Transaction type decodes them")
}

func describe(typ, room, sender, toUser, toDevice string, content []byte) string {
	return fmt.Sprintf("type=%s room=%s sender=%s to=%s/%s content=%s", typ, room, sender, toUser, toDevice, content)
}

// roomEvent returns the i-th room event of a test, and whether the AS is
// interested in it: every event of the bridged room (its ghosts are
// members), none of the other room (no member, no sender or target in its
// namespace).
func roomEvent(t *testing.T, prefix string, i int) (scheduler.Event, bool) {
	t.Helper()
	room, sender, ghost := bridgedRoom, []string{alice, ghost1, ghost2, bot}[i%4], []string{ghost1, ghost2, ghost3}[i%3]
	if i%10 == 9 {
		room, sender, ghost = otherRoom, carol, carol
	}
	raw := map[string]any{
		"event_id":         fmt.Sprintf("$%s-%d", prefix, i),
		"room_id":          room,
		"sender":           sender,
		"origin_server_ts": 1_700_000_000_000 + i,
		"unsigned":         map[string]any{"age": i},
	}
	switch i % 8 {
	case 0:
		raw["type"] = "m.room.message"
		raw["content"] = map[string]any{
			"msgtype":        "m.text",
			"body":           fmt.Sprintf("héllo wörld 🌍 #%d \"quoted\" \\ <tag> \u2028 end", i),
			"format":         "org.matrix.custom.html",
			"formatted_body": fmt.Sprintf("<b>héllo</b> #%d", i),
			"m.mentions":     map[string]any{"user_ids": []string{ghost1}},
		}
	case 1:
		raw["type"] = "m.room.member"
		raw["sender"] = ghost
		raw["state_key"] = ghost
		raw["content"] = map[string]any{"membership": "join", "displayname": fmt.Sprintf("Ghost %d", i)}
	case 2:
		raw["type"] = "m.reaction"
		raw["content"] = map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": fmt.Sprintf("$%s-%d", prefix, i-2), "key": "👍",
		}}
	case 3:
		raw["type"] = "m.room.encrypted"
		raw["content"] = map[string]any{
			"algorithm":  "m.megolm.v1.aes-sha2",
			"ciphertext": fmt.Sprintf("AwgAEpAB%dmegolm", i),
			"device_id":  "ALICEDEV",
			"sender_key": "L8m0kGq4Zm9Uo1r2ZKg5TXVcC2rQZ0tT2yT7dK3lQWc",
			"session_id": fmt.Sprintf("session-%d", i/80),
		}
	case 4:
		raw["type"] = "m.room.name"
		raw["state_key"] = ""
		raw["content"] = map[string]any{"name": fmt.Sprintf("Bridged room %d", i)}
	case 5:
		target := fmt.Sprintf("$%s-%d", prefix, i-5)
		raw["type"] = "m.room.redaction"
		raw["redacts"] = target
		raw["content"] = map[string]any{"redacts": target, "reason": "interop"}
	case 6:
		raw["type"] = typeCustomEvent.Type
		raw["content"] = map[string]any{
			"n":      i,
			"nested": map[string]any{"list": []any{1, 2.5, "three", nil, true}, "empty": map[string]any{}},
			"text":   "tab\tnewline\nnul-free ☃",
		}
	case 7:
		raw["type"] = typeCustomState.Type
		raw["state_key"] = fmt.Sprintf("key-%d", i)
		raw["content"] = map[string]any{"n": i}
	}
	data, err := json.Marshal(raw)
	require.NoError(t, err)
	ev, err := scheduler.ParseEvent(data)
	require.NoError(t, err)
	return ev, room == bridgedRoom
}

// ephemeralEvent returns the i-th ephemeral event of a test, and whether
// the AS is interested in it: typing and receipts of the bridged room,
// presence of a user in its namespace or in the bridged room.
func ephemeralEvent(t *testing.T, prefix string, i int) (scheduler.EphemeralEvent, bool) {
	t.Helper()
	room := bridgedRoom
	if i%10 == 9 {
		room = otherRoom
	}
	var raw map[string]any
	wanted := room == bridgedRoom
	switch i % 3 {
	case 0:
		typist := fmt.Sprintf("@interop_typist%d:example.org", i)
		if room == otherRoom {
			typist = carol
		}
		raw = map[string]any{"type": "m.typing", "room_id": room, "content": map[string]any{"user_ids": []string{typist, alice}}}
	case 1:
		raw = map[string]any{"type": "m.receipt", "room_id": room, "content": map[string]any{
			fmt.Sprintf("$%s-rcpt-%d", prefix, i): map[string]any{
				"m.read": map[string]any{alice: map[string]any{"ts": 1_700_000_000_000 + i, "thread_id": "main"}},
			},
		}}
	case 2:
		user := []string{ghost1, alice, carol, bot}[(i/3)%4]
		wanted = user != carol
		raw = map[string]any{"type": "m.presence", "sender": user, "content": map[string]any{
			"presence":         []string{"online", "unavailable"}[i%2],
			"last_active_ago":  i + 1,
			"currently_active": i%2 == 0,
			"status_msg":       fmt.Sprintf("interop %d ✓", i),
		}}
	}
	data, err := json.Marshal(raw)
	require.NoError(t, err)
	ev, err := scheduler.ParseEphemeralEvent(data)
	require.NoError(t, err)
	return ev, wanted
}

// toDeviceMessage returns the i-th to-device message of a test, and
// whether the AS is interested in it: its recipient is in the AS's users
// namespace or is its own user, not alice.
func toDeviceMessage(t *testing.T, prefix string, i int) (scheduler.ToDeviceMessage, bool) {
	t.Helper()
	to := []string{ghost1, ghost2, bot, alice, ghost3}[i%5]
	device := strings.ToUpper(strings.TrimPrefix(strings.Split(to, ":")[0], "@interop_")) + "DEV"
	msg := scheduler.ToDeviceMessage{Sender: alice, ToUserID: to, ToDeviceID: device, MessageID: fmt.Sprintf("%s-%d", prefix, i)}
	var content map[string]any
	switch i % 3 {
	case 0:
		msg.Type = "m.room.encrypted"
		content = map[string]any{
			"algorithm":  "m.olm.v1.curve25519-aes-sha2",
			"sender_key": "L8m0kGq4Zm9Uo1r2ZKg5TXVcC2rQZ0tT2yT7dK3lQWc",
			"ciphertext": map[string]any{
				"Zm9yIHRoZSByZWNpcGllbnQgZGV2aWNlIGN1cnZlIGtleQ": map[string]any{"type": 0, "body": fmt.Sprintf("olm-prekey-%d", i)},
			},
		}
	case 1:
		msg.Type = "m.room_key_request"
		content = map[string]any{
			"action":               "request",
			"request_id":           fmt.Sprintf("%s-req-%d", prefix, i),
			"requesting_device_id": "ALICEDEV",
			"body": map[string]any{
				"algorithm":  "m.megolm.v1.aes-sha2",
				"room_id":    bridgedRoom,
				"session_id": fmt.Sprintf("session-%d", i),
				"sender_key": "L8m0kGq4Zm9Uo1r2ZKg5TXVcC2rQZ0tT2yT7dK3lQWc",
			},
		}
	case 2:
		msg.Type = typeCustomToDevice.Type
		content = map[string]any{"n": i, "note": "ünïcödé"}
	}
	data, err := json.Marshal(content)
	require.NoError(t, err)
	msg.Content = data
	return msg, to != alice
}

// checkRoomEvent compares what mautrix handed the application with the
// event enqueued: top-level fields, the content byte for byte, and what
// mautrix's typed content parsing made of it.
func checkRoomEvent(t *testing.T, want scheduler.Event, got *event.Event) {
	t.Helper()
	var w struct {
		Content   json.RawMessage `json:"content"`
		Timestamp int64           `json:"origin_server_ts"`
		Redacts   string          `json:"redacts"`
		Unsigned  struct {
			Age int64 `json:"age"`
		} `json:"unsigned"`
	}
	require.NoError(t, json.Unmarshal(want.Raw, &w))
	var c map[string]any
	require.NoError(t, json.Unmarshal(w.Content, &c))

	assert.Equal(t, want.ID, got.ID.String())
	assert.Equal(t, want.RoomID, got.RoomID.String(), want.ID)
	assert.Equal(t, want.Sender, got.Sender.String(), want.ID)
	assert.Equal(t, want.Type, got.Type.Type, want.ID)
	if want.StateKey == nil {
		assert.Nil(t, got.StateKey, want.ID)
		assert.Equal(t, event.MessageEventType, got.Type.Class, want.ID)
	} else if assert.NotNil(t, got.StateKey, want.ID) {
		assert.Equal(t, *want.StateKey, *got.StateKey, want.ID)
		assert.Equal(t, event.StateEventType, got.Type.Class, want.ID)
	}
	assert.Equal(t, w.Timestamp, got.Timestamp, want.ID)
	assert.Equal(t, w.Redacts, got.Redacts.String(), want.ID)
	assert.Equal(t, w.Unsigned.Age, got.Unsigned.Age, want.ID)
	assert.Equal(t, string(w.Content), string(got.Content.VeryRaw), "content of %s, byte for byte", want.ID)
	if want.StateKey == nil {
		// For a state event mautrix sets SourceTimeline & SourceJoin,
		// which is 0 (appservice/http.go, handleEvents): not checked.
		assert.Equal(t, event.SourceTimeline, got.Mautrix.EventSource, want.ID)
	}

	switch want.Type {
	case "m.room.message":
		msg := got.Content.AsMessage()
		assert.Equal(t, event.MsgText, msg.MsgType, want.ID)
		assert.Equal(t, c["body"], msg.Body, want.ID)
		assert.Equal(t, c["formatted_body"], msg.FormattedBody, want.ID)
		if assert.NotNil(t, msg.Mentions, want.ID) {
			assert.Equal(t, []id.UserID{ghost1}, msg.Mentions.UserIDs, want.ID)
		}
	case "m.room.member":
		assert.Equal(t, event.MembershipJoin, got.Content.AsMember().Membership, want.ID)
		assert.Equal(t, c["displayname"], got.Content.AsMember().Displayname, want.ID)
	case "m.reaction":
		rel := got.Content.AsReaction().RelatesTo
		assert.Equal(t, "👍", rel.Key, want.ID)
		assert.Equal(t, event.RelAnnotation, rel.Type, want.ID)
	case "m.room.encrypted":
		enc := got.Content.AsEncrypted()
		assert.Equal(t, id.AlgorithmMegolmV1, enc.Algorithm, want.ID)
		assert.Equal(t, c["ciphertext"], string(enc.MegolmCiphertext), want.ID)
	case "m.room.name":
		assert.Equal(t, c["name"], got.Content.AsRoomName().Name, want.ID)
	case "m.room.redaction":
		assert.Equal(t, w.Redacts, got.Content.AsRedaction().Redacts.String(), want.ID)
	default:
		assert.Equal(t, c, got.Content.Raw, want.ID)
	}
}

// checkEphemeral compares what mautrix's typed parsing made of an
// ephemeral event with what was enqueued.
func checkEphemeral(t *testing.T, want scheduler.EphemeralEvent, got *event.Event) {
	t.Helper()
	assert.Equal(t, event.EphemeralEventType, got.Type.Class)
	assert.Equal(t, event.SourceEphemeral, got.Mautrix.EventSource)
	var c map[string]any
	require.NoError(t, json.Unmarshal(got.Content.VeryRaw, &c))
	switch want.Type {
	case "m.typing":
		var users []string
		for _, u := range got.Content.AsTyping().UserIDs {
			users = append(users, u.String())
		}
		assert.Len(t, users, 2)
		assert.Equal(t, c["user_ids"], []any{users[0], users[1]})
	case "m.receipt":
		receipts := *got.Content.AsReceipt()
		require.Len(t, receipts, 1)
		for evtID, byType := range receipts {
			assert.Contains(t, evtID.String(), "-rcpt-")
			r, ok := byType[event.ReceiptTypeRead][alice]
			if assert.True(t, ok, "m.read receipt of alice on %s", evtID) {
				assert.Equal(t, event.ReadReceiptThreadMain, r.ThreadID)
				assert.False(t, r.Timestamp.IsZero())
			}
		}
	case "m.presence":
		p := got.Content.AsPresence()
		assert.Equal(t, c["status_msg"], p.StatusMessage)
		assert.Equal(t, c["presence"], string(p.Presence))
		assert.EqualValues(t, c["last_active_ago"], p.LastActiveAgo)
		assert.Equal(t, want.UserID, got.Sender.String())
	}
}

// checkToDevice compares what mautrix's typed parsing made of a to-device
// message with what was enqueued.
func checkToDevice(t *testing.T, want scheduler.ToDeviceMessage, got *event.Event) {
	t.Helper()
	assert.Equal(t, event.ToDeviceEventType, got.Type.Class)
	assert.Equal(t, event.SourceToDevice, got.Mautrix.EventSource)
	var c map[string]any
	require.NoError(t, json.Unmarshal(want.Content, &c))
	switch want.Type {
	case "m.room.encrypted":
		enc := got.Content.AsEncrypted()
		assert.Equal(t, id.AlgorithmOlmV1, enc.Algorithm)
		require.Len(t, enc.OlmCiphertext, 1)
		for _, ct := range enc.OlmCiphertext {
			assert.True(t, strings.HasPrefix(ct.Body, "olm-prekey-"), ct.Body)
			assert.Equal(t, id.OlmMsgTypePreKey, ct.Type)
		}
	case "m.room_key_request":
		req := got.Content.AsRoomKeyRequest()
		assert.Equal(t, c["request_id"], req.RequestID)
		assert.Equal(t, c["action"], string(req.Action))
		assert.Equal(t, bridgedRoom, req.Body.RoomID.String())
	default:
		assert.Equal(t, c, got.Content.Raw)
	}
}

// tally counts what mautrix handed the application, by kind, and what the
// transactions carried, for the log.
func tally(got received, puts []put) string {
	byType := map[string]int{}
	for _, ev := range got.Ephemeral {
		byType[ev.Type.Type]++
	}
	var changed, left int
	for _, dl := range got.DeviceLists {
		changed += len(dl.Changed)
		left += len(dl.Left)
	}
	var txns, retries, fallbackDevices, maxEvents, maxEph, maxTD int
	seen := map[string]bool{}
	for _, p := range puts {
		if seen[p.TxnID] {
			retries++
			continue
		}
		seen[p.TxnID] = true
		txns++
		for _, devices := range p.Txn.MSC3202FallbackKeys {
			fallbackDevices += len(devices)
		}
		maxEvents = max(maxEvents, len(p.Txn.Events))
		maxEph = max(maxEph, len(p.Txn.EphemeralEvents))
		maxTD = max(maxTD, len(p.Txn.MSC2409ToDeviceEvents))
	}
	return fmt.Sprintf("room events %d; ephemeral %d (m.typing %d, m.receipt %d, m.presence %d); "+
		"to-device %d; device-list dispatches %d (changed %d users, left %d users); OTK counts %d devices; "+
		"unused fallback key types %d devices (decoded by mautrix's Transaction type, not dispatched); "+
		"transactions %d (+%d repeated PUTs), largest: %d events, %d ephemeral, %d to-device",
		len(got.Events), len(got.Ephemeral), byType["m.typing"], byType["m.receipt"], byType["m.presence"],
		len(got.ToDevice), len(got.DeviceLists), changed, left, len(got.OTKs),
		fallbackDevices, txns, retries, maxEvents, maxEph, maxTD)
}
