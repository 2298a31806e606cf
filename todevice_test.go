package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// TestToDeviceInterestAndBody: a to-device message goes to the services
// that opted in to ephemeral events and are interested in the recipient
// (users namespace, exclusive or not, or own user), under
// "de.sorunome.msc2409.to_device" with to_user_id and to_device_id.
func TestToDeviceInterestAndBody(t *testing.T) {
	ctx := context.Background()
	bridge := astest.New(t, "t1")  // unstable opt-in, users @br_
	shared := astest.New(t, "t2")  // stable opt-in, non-exclusive users @br_
	msc3202 := astest.New(t, "t3") // MSC3202 only, users @br_
	bridgeReg := withFlags(reg("bridge", bridge, "@br_"), false, true, false)
	sharedReg := withFlags(reg("shared", shared), true, false, false)
	sharedReg.Namespaces.Users = []Namespace{{Regex: "@br_", Exclusive: false}}
	s := start(t, testConfig(t, bridgeReg, sharedReg,
		withFlags(reg("msc3202", msc3202, "@br_"), false, false, true),
		withFlags(reg("nourl", nil, ".*"), true, true, true)))

	msg := ToDeviceMessage{
		Sender: "@alice:example.org", Type: "m.room.encrypted", ToUserID: "@br_bob:example.org", ToDeviceID: "PUPPET",
		Content: []byte(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"AwoG"}}}`),
	}
	toBot := toDeviceFor("@bridgebot:example.org", "to the bot")
	toNobody := toDeviceFor("@carol:example.org", "to nobody")
	require.NoError(t, s.EnqueueToDevice(ctx, msg, toBot, toNobody))
	waitReceived(t, bridge, "to the bot") // before the marker, so it has a transaction of its own
	waitFor(t, "shared's transaction", func() bool { return len(txnBodies(shared)) == 1 })
	require.NoError(t, s.Enqueue(ctx, event("$end", "!r", "@br_end:example.org")))
	for _, as := range []*astest.Server{bridge, shared, msc3202} {
		waitFor(t, "marker", func() bool { return as.Deliveries("$end") == 1 })
	}

	want := `{"events":[],"de.sorunome.msc2409.to_device":[` +
		`{"to_user_id":"@br_bob:example.org","to_device_id":"PUPPET","type":"m.room.encrypted","sender":"@alice:example.org",` +
		`"content":{"algorithm":"m.olm.v1.curve25519-aes-sha2","ciphertext":{"k":{"type":0,"body":"AwoG"}}}},` +
		`{"to_user_id":"@bridgebot:example.org","to_device_id":"DEV","type":"m.room.encrypted","sender":"@alice:example.org",` +
		`"content":{"algorithm":"m.olm.v1.curve25519-aes-sha2","marker":"to the bot"}}]}`
	assert.Equal(t, want, string(txnBodies(bridge)[0]), "the namespaced recipient and the AS's own user")
	sharedBody := string(txnBodies(shared)[0])
	assert.Contains(t, sharedBody, `"to_user_id":"@br_bob:example.org"`, "a non-exclusive namespace counts")
	assert.NotContains(t, sharedBody, "to the bot")
	for _, as := range []*astest.Server{bridge, shared, msc3202} {
		assert.False(t, received(as, "to nobody"))
	}
	assert.NotContains(t, string(txnBodies(msc3202)[0]), "to_device", "no ephemeral opt-in, no to-device")
	_, err := s.Status(ctx, "nourl")
	assert.ErrorIs(t, err, ErrUnknownService)
}

// TestToDeviceMessageIDDeduplicatesWhilePending: a message replayed with
// the same MessageID while still pending is queued once; messages without
// one never are deduplicated.
func TestToDeviceMessageIDDeduplicatesWhilePending(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, withFlags(reg("a", as, "@a_"), true, false, false))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	withID := toDeviceFor("@a_bob:example.org", "with id")
	withID.MessageID = "stream-17"
	otherDevice := withID
	otherDevice.ToDeviceID = "OTHER"
	noID := toDeviceFor("@a_bob:example.org", "no id")
	require.NoError(t, s.EnqueueToDevice(ctx, withID, noID))
	waitDown(t, s, "a")
	require.NoError(t, s.EnqueueToDevice(ctx, withID, withID, noID, otherDevice))
	st, err := s.Status(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, 1, st.StoredTxns)
	assert.Equal(t, 2, st.QueuedEvents, "the replayed message without ID and the one to another device")
	as.Up()
	s.ServiceUp("a")
	waitFor(t, "all delivered", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateUp && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
	all := ""
	for _, b := range txnBodies(as) {
		all += string(b)
	}
	assert.Equal(t, 2, strings.Count(all, `"with id"`))
	assert.Equal(t, 2, strings.Count(all, `"no id"`))
	assert.Equal(t, 1, strings.Count(all, `"to_device_id":"OTHER"`))
}
