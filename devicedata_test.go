package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// TestDeviceListsInterestAndMergeLaterWins: each service that opted in to
// MSC3202 receives the users it is interested in (by namespace, or through
// UserRooms by a room the user is in), and the summaries of one
// transaction merge, a later one winning.
func TestDeviceListsInterestAndMergeLaterWins(t *testing.T) {
	ctx := context.Background()
	dev := astest.New(t, "t1")   // MSC3202, users @dev_
	roomy := astest.New(t, "t2") // MSC3202, rooms !shared
	eph := astest.New(t, "t3")   // ephemeral only, wants every user
	roomyReg := withFlags(reg("roomy", roomy), false, false, true)
	roomyReg.Namespaces.Rooms = []Namespace{{Regex: "!shared"}}
	cfg := testConfig(t,
		withFlags(reg("dev", dev, "@dev_"), false, false, true),
		roomyReg,
		withFlags(reg("eph", eph, "@"), true, true, false),
		withFlags(reg("nourl", nil, "@"), true, true, true))
	cfg.Rooms = roomsDirectory{joined: map[string][]string{"@carol:remote.org": {"!shared:example.org"}}}
	s := start(t, cfg)

	// Hold the first transaction of dev and roomy so the summaries queue
	// up behind it and leave in one transaction.
	dev.Hang()
	roomy.Hang()
	require.NoError(t, s.Enqueue(ctx, event("$first", "!shared:example.org", "@dev_x:example.org")))
	waitArrived(t, dev, 1)
	waitArrived(t, roomy, 1)
	for _, c := range []DeviceListChanges{
		{Changed: []string{"@dev_a:example.org", "@dev_b:example.org", "@carol:remote.org", "@zed:example.org"}, Left: []string{"@dev_gone:example.org"}},
		{Changed: []string{"@dev_gone:example.org"}, Left: []string{"@dev_a:example.org", "@carol:remote.org"}},
		{Changed: []string{"@carol:remote.org", "@dev_b:example.org"}},
	} {
		require.NoError(t, s.EnqueueDeviceLists(ctx, c))
	}
	// A marker both want, in the same transaction as the summaries.
	end := event("$end", "!shared:example.org", "@dev_y:example.org")
	require.NoError(t, s.Enqueue(ctx, end))
	dev.Release()
	roomy.Release()
	for _, as := range []*astest.Server{dev, roomy, eph} {
		waitFor(t, "marker", func() bool { return as.Deliveries("$end") == 1 })
	}

	devBodies, roomyBodies := txnBodies(dev), txnBodies(roomy)
	require.Len(t, devBodies, 2)
	require.Len(t, roomyBodies, 2)
	events := `{"events":[` + string(end.Raw) + `]`
	assert.Equal(t, events+`,"org.matrix.msc3202.device_lists":{"changed":["@dev_b:example.org","@dev_gone:example.org"],"left":["@dev_a:example.org"]}}`,
		string(devBodies[1]))
	assert.Equal(t, events+`,"org.matrix.msc3202.device_lists":{"changed":["@carol:remote.org"],"left":[]}}`,
		string(roomyBodies[1]), "carol shares an interesting room; the @dev_ users do not")
	for _, b := range txnBodies(eph) {
		assert.NotContains(t, string(b), "msc3202", "no MSC3202 opt-in")
	}
	_, err := s.Status(ctx, "nourl")
	assert.ErrorIs(t, err, ErrUnknownService, "nothing is stored for an AS with url: null")
}

// TestUserRoomsErrorFailsTheCallAndStoresNothing: an error of the hook
// fails the call, which stores nothing, not even what was decided.
func TestUserRoomsErrorFailsTheCallAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, withFlags(reg("a", as, "@a_"), true, false, true))
	cfg.Rooms = roomsDirectory{fakeDirectory: fakeDirectory{err: errors.New("membership cache is down")}}
	s := start(t, cfg)
	err := s.EnqueueEphemeral(ctx, presenceOf(t, "@a_in:example.org", "x"), presenceOf(t, "@out:example.org", "y"))
	require.ErrorContains(t, err, "membership cache is down")
	err = s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: []string{"@a_in:example.org", "@out:example.org"}})
	require.ErrorContains(t, err, "membership cache is down")
	require.ErrorContains(t, err, "the joined rooms of user @out:example.org")
	bl, err := cfg.Store.Backlogs(ctx)
	require.NoError(t, err)
	assert.Empty(t, bl)
}

// TestDeviceKeyCountsBothSpellingsAndFallback: key counts go to the
// services interested in the user, merged per device, the one-time key
// counts under both spellings.
func TestDeviceKeyCountsBothSpellingsAndFallback(t *testing.T) {
	ctx := context.Background()
	keys := astest.New(t, "t1")
	other := astest.New(t, "t2")
	s := start(t, testConfig(t,
		withFlags(reg("keys", keys, "@k_"), false, false, true),
		withFlags(reg("other", other, "@o_"), true, false, false))) // no MSC3202
	require.NoError(t, s.EnqueueDeviceKeyCounts(ctx,
		DeviceKeyCounts{UserID: "@k_bob:example.org", DeviceID: "A", OneTimeKeyCounts: map[string]int{"signed_curve25519": 50}, UnusedFallbackKeyTypes: []string{"signed_curve25519"}},
		DeviceKeyCounts{UserID: "@k_bob:example.org", DeviceID: "B", OneTimeKeyCounts: map[string]int{}},
		DeviceKeyCounts{UserID: "@keysbot:example.org", DeviceID: "BOT", UnusedFallbackKeyTypes: []string{}},
		DeviceKeyCounts{UserID: "@o_nobody:example.org", DeviceID: "X", OneTimeKeyCounts: map[string]int{"signed_curve25519": 1}},
		DeviceKeyCounts{UserID: "@k_bob:example.org", DeviceID: "A", OneTimeKeyCounts: map[string]int{"signed_curve25519": 49}},
	))
	waitFor(t, "key counts delivered", func() bool { return len(txnBodies(keys)) == 1 })
	const otk = `{"@k_bob:example.org":{"A":{"signed_curve25519":49},"B":{}}}`
	assert.Equal(t, `{"events":[]`+
		`,"org.matrix.msc3202.device_one_time_key_counts":`+otk+
		`,"org.matrix.msc3202.device_one_time_keys_count":`+otk+
		`,"org.matrix.msc3202.device_unused_fallback_key_types":{"@k_bob:example.org":{"A":["signed_curve25519"]},"@keysbot:example.org":{"BOT":[]}}}`,
		string(txnBodies(keys)[0]))
	_, err := s.Status(ctx, "other")
	require.NoError(t, err)
	assert.Empty(t, other.Requests(), "no MSC3202 opt-in, nothing sent")
}

// TestLargeDeviceListSummaryIsStoredInParts: a summary larger than
// MaxTxnBytes is stored in parts that merge to the whole.
func TestLargeDeviceListSummaryIsStoredInParts(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, withFlags(reg("a", as, "@"), false, false, true))
	cfg.MaxTxnBytes = 300
	cfg.MaxPoolBytes = 1 << 20
	s := start(t, cfg)
	var changed, left []string
	for i := range 60 {
		changed = append(changed, fmt.Sprintf("@user%02d:example.org", i))
		left = append(left, fmt.Sprintf("@gone%02d:example.org", i))
	}
	require.NoError(t, s.EnqueueDeviceLists(ctx, DeviceListChanges{Changed: changed, Left: left}))
	waitFor(t, "everything delivered", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && len(txnBodies(as)) > 0 && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
	var gotChanged, gotLeft []string
	for _, b := range txnBodies(as) {
		var parsed struct {
			DL struct{ Changed, Left []string } `json:"org.matrix.msc3202.device_lists"`
		}
		require.NoError(t, json.Unmarshal(b, &parsed))
		gotChanged = append(gotChanged, parsed.DL.Changed...)
		gotLeft = append(gotLeft, parsed.DL.Left...)
	}
	slices.Sort(gotChanged)
	slices.Sort(gotLeft)
	slices.Sort(left)
	assert.Equal(t, changed, gotChanged)
	assert.Equal(t, left, gotLeft)
	assert.Greater(t, len(txnBodies(as)), 1, "300 bytes cannot hold 120 users")
}
