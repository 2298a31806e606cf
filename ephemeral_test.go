package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// TestEphemeralInterest checks who receives typing, receipts and presence,
// as Synapse decides it (is_interested_in_room, is_interested_in_presence)
// and only for services that opted in.
func TestEphemeralInterest(t *testing.T) {
	ctx := context.Background()
	byRoom := astest.New(t, "t1")     // rooms namespace, stable opt-in
	byUser := astest.New(t, "t2")     // users namespace, unstable opt-in
	notOptedIn := astest.New(t, "t3") // wants everything, opted in to MSC3202 only
	rooms := withFlags(reg("rooms", byRoom), true, false, false)
	rooms.Namespaces.Rooms = []Namespace{{Regex: "!bridged"}}
	rooms.Namespaces.Aliases = []Namespace{{Regex: "#bridged_"}}
	users := withFlags(reg("users", byUser, "@u_"), false, true, false)
	none := withFlags(reg("none", notOptedIn, ".*"), false, false, true)
	none.Namespaces.Rooms = []Namespace{{Regex: ".*"}}
	nullURL := withFlags(reg("nourl", nil, ".*"), true, true, true)
	cfg := testConfig(t, rooms, users, none, nullURL)
	cfg.Rooms = roomsDirectory{
		fakeDirectory: fakeDirectory{
			aliases: map[string][]string{"!aliased:example.org": {"#bridged_x:example.org"}},
			members: map[string][]string{"!withu:example.org": {"@z:example.org", "@u_bob:example.org"}},
		},
		joined: map[string][]string{
			"@carol:remote.org": {"!nothing:example.org", "!bridged1:example.org"},
			"@dave:remote.org":  {"!withu:example.org"},
			"@erin:remote.org":  {"!nothing:example.org"},
		},
	}
	s := start(t, cfg)

	cases := []struct {
		ev       EphemeralEvent
		wantedBy []*astest.Server
	}{
		{typingIn(t, "!bridged1:example.org", "typing in a namespaced room"), []*astest.Server{byRoom}},
		{receiptIn(t, "!bridged2:example.org", "receipt in a namespaced room"), []*astest.Server{byRoom}},
		{typingIn(t, "!aliased:example.org", "typing in a room with a namespaced alias"), []*astest.Server{byRoom}},
		{receiptIn(t, "!withu:example.org", "receipt in a room with a namespaced member"), []*astest.Server{byUser}},
		{typingIn(t, "!nothing:example.org", "typing elsewhere"), nil},
		{presenceOf(t, "@u_bob:example.org", "presence of a namespaced user"), []*astest.Server{byUser}},
		{presenceOf(t, "@usersbot:example.org", "presence of the AS's own user"), []*astest.Server{byUser}},
		{presenceOf(t, "@carol:remote.org", "presence of a user in a namespaced room"), []*astest.Server{byRoom}},
		{presenceOf(t, "@dave:remote.org", "presence of a user sharing a room with a namespaced member"), []*astest.Server{byUser}},
		{presenceOf(t, "@erin:remote.org", "presence of a user in no interesting room"), nil},
	}
	var all []EphemeralEvent
	for _, c := range cases {
		all = append(all, c.ev)
	}
	require.NoError(t, s.EnqueueEphemeral(ctx, all...))
	// Markers every service wants, by its namespaces: once each arrived,
	// everything enqueued before it has (order per service).
	require.NoError(t, s.Enqueue(ctx,
		event("$end-rooms", "!bridged9:example.org", "@z:example.org"),
		event("$end-users", "!x:example.org", "@u_end:example.org")))
	for _, as := range []*astest.Server{byRoom, byUser, notOptedIn} {
		waitDelivered(t, as, 1)
	}
	waitFor(t, "markers", func() bool { return byRoom.Deliveries("$end-rooms") == 1 && byUser.Deliveries("$end-users") == 1 })
	for _, c := range cases {
		var marker string
		require.NoError(t, json.Unmarshal(bodyKeys(t, c.ev.Raw)["content"], &struct {
			Marker *string `json:"marker"`
		}{&marker}))
		for _, as := range []*astest.Server{byRoom, byUser, notOptedIn} {
			want := false
			for _, w := range c.wantedBy {
				want = want || w == as
			}
			assert.Equal(t, want, received(as, marker), "%s: AS %s", marker, as.HSToken())
		}
	}
	_, err := s.Status(ctx, "nourl")
	assert.ErrorIs(t, err, ErrUnknownService, "nothing is stored for an AS with url: null")
}

// TestEphemeralBodyKeysPerFlags checks the body an AS gets for each opt-in:
// the stable key, the unstable key, or both with the same content; and
// "events" present as [] when the transaction holds no event.
func TestEphemeralBodyKeysPerFlags(t *testing.T) {
	ctx := context.Background()
	stable, unstable, both := astest.New(t, "s"), astest.New(t, "u"), astest.New(t, "b")
	var regs []*Registration
	for _, r := range []*Registration{
		withFlags(reg("stable", stable), true, false, false),
		withFlags(reg("unstable", unstable), false, true, false),
		withFlags(reg("both", both), true, true, false),
	} {
		r.Namespaces.Rooms = []Namespace{{Regex: "!r:"}}
		regs = append(regs, r)
	}
	s := start(t, testConfig(t, regs...))
	ev := typingIn(t, "!r:example.org", "keys")
	require.NoError(t, s.EnqueueEphemeral(ctx, ev))
	raw := string(ev.Raw)
	for as, want := range map[*astest.Server]string{
		stable:   `{"events":[],"ephemeral":[` + raw + `]}`,
		unstable: `{"events":[],"de.sorunome.msc2409.ephemeral":[` + raw + `]}`,
		both:     `{"events":[],"ephemeral":[` + raw + `],"de.sorunome.msc2409.ephemeral":[` + raw + `]}`,
	} {
		waitReceived(t, as, "keys")
		bodies := txnBodies(as)
		require.Len(t, bodies, 1)
		assert.Equal(t, want, string(bodies[0]))
		assert.Equal(t, "application/json", successes(as)[0].ContentType)
	}
}

// TestEphemeralAndToDeviceAtMost100PerTxnRestLeavesAtOnce checks the
// per-kind limits: 100 ephemeral events and 100 to-device messages a
// transaction, the rest in the following ones at once (no retry wait, no
// poll), each transaction a contiguous run of what was enqueued.
func TestEphemeralAndToDeviceAtMost100PerTxnRestLeavesAtOnce(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Hang()
	r := withFlags(reg("a", as, "@a_"), true, false, false)
	r.Namespaces.Rooms = []Namespace{{Regex: "!r"}}
	s := start(t, testConfig(t, r))
	require.NoError(t, s.Enqueue(ctx, event("$first", "!r", "@a_x")))
	waitArrived(t, as, 1) // the first transaction hangs while the rest queues up

	var typing []EphemeralEvent
	for i := range 250 {
		typing = append(typing, typingIn(t, "!r:example.org", fmt.Sprintf("e%d", i)))
	}
	var msgs []ToDeviceMessage
	for i := range 250 {
		msgs = append(msgs, toDeviceFor("@a_bob:example.org", fmt.Sprintf("t%d", i)))
	}
	require.NoError(t, s.EnqueueEphemeral(ctx, typing...))
	require.NoError(t, s.EnqueueToDevice(ctx, msgs...))
	as.Release()
	waitReceived(t, as, "t249")

	type counts struct{ events, ephemeral, toDevice int }
	var got []counts
	var order []string
	for _, b := range txnBodies(as) {
		var parsed struct {
			Events    []json.RawMessage `json:"events"`
			Ephemeral []struct {
				Content struct{ Marker string } `json:"content"`
			} `json:"ephemeral"`
			ToDevice []struct {
				Content struct{ Marker string } `json:"content"`
			} `json:"de.sorunome.msc2409.to_device"`
		}
		require.NoError(t, json.Unmarshal(b, &parsed))
		got = append(got, counts{len(parsed.Events), len(parsed.Ephemeral), len(parsed.ToDevice)})
		for _, e := range parsed.Ephemeral {
			order = append(order, e.Content.Marker)
		}
		for _, m := range parsed.ToDevice {
			order = append(order, m.Content.Marker)
		}
	}
	assert.Equal(t, []counts{{1, 0, 0}, {0, 100, 0}, {0, 100, 0}, {0, 50, 100}, {0, 0, 100}, {0, 0, 50}}, got)
	var want []string
	for i := range 250 {
		want = append(want, fmt.Sprintf("e%d", i))
	}
	for i := range 250 {
		want = append(want, fmt.Sprintf("t%d", i))
	}
	assert.Equal(t, want, order, "every item once, in enqueue order")
	assertIncreasingTxnIDs(t, as)
}

// TestEphemeralAndEventsKeepEnqueueOrderAcrossTxns: items of every kind
// leave in enqueue order: each transaction holds only items enqueued after
// everything the transactions before it held, after an outage too.
func TestEphemeralAndEventsKeepEnqueueOrderAcrossTxns(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	r := withFlags(reg("a", as, "@a_"), false, true, false)
	r.Namespaces.Rooms = []Namespace{{Regex: "!r"}}
	cfg := testConfig(t, r)
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	cfg.MaxEventsPerTxn = 30
	s := start(t, cfg)

	// 400 items in runs of varying kind: the limits cut transactions at
	// different points.
	n := 0
	for run := 0; n < 400; run++ {
		size := 1 + run%37
		if run%2 == 0 {
			var evs []Event
			for range size {
				evs = append(evs, event(fmt.Sprintf("$%03d", n), "!r", "@a_x"))
				n++
			}
			require.NoError(t, s.Enqueue(ctx, evs...))
		} else {
			var eph []EphemeralEvent
			for range size {
				eph = append(eph, receiptIn(t, "!r:example.org", fmt.Sprintf("%03d", n)))
				n++
			}
			require.NoError(t, s.EnqueueEphemeral(ctx, eph...))
		}
		if run == 0 {
			waitDown(t, s, "a")
		}
	}
	as.Up()
	s.ServiceUp("a")
	waitFor(t, "everything delivered", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateUp && st.StoredTxns == 0 && st.QueuedEvents == 0
	})

	last := -1
	total := 0
	for i, b := range txnBodies(as) {
		var parsed struct {
			Events []struct {
				ID string `json:"event_id"`
			} `json:"events"`
			Ephemeral []struct {
				Content struct{ Marker string } `json:"content"`
			} `json:"de.sorunome.msc2409.ephemeral"`
		}
		require.NoError(t, json.Unmarshal(b, &parsed))
		var idx []int
		for _, e := range parsed.Events {
			var k int
			_, err := fmt.Sscanf(e.ID, "$%d", &k)
			require.NoError(t, err)
			idx = append(idx, k)
		}
		var eidx []int
		for _, e := range parsed.Ephemeral {
			var k int
			_, err := fmt.Sscanf(e.Content.Marker, "%d", &k)
			require.NoError(t, err)
			eidx = append(eidx, k)
		}
		assert.LessOrEqual(t, len(idx), 30, "txn %d", i)
		assert.LessOrEqual(t, len(eidx), MaxEphemeralPerTxn, "txn %d", i)
		all := append(idx, eidx...)
		lo, hi := 1<<30, -1
		for _, k := range all {
			lo, hi = min(lo, k), max(hi, k)
		}
		require.Greater(t, lo, last, "txn %d holds an item enqueued before one of an earlier txn", i)
		require.Equal(t, hi-lo+1, len(all), "txn %d is a contiguous run of the queue", i)
		last = hi
		total += len(all)
	}
	assert.Equal(t, n, total)
	assertIncreasingTxnIDs(t, as)
}

// TestEphemeralRetriedByteIdentical: ephemeral content is stored with its
// transaction and resent byte for byte under the same ID.
func TestEphemeralRetriedByteIdentical(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.FailWith(func(n int) int {
		if n < 3 {
			return 500
		}
		return 0
	})
	r := withFlags(reg("a", as, "@a_"), true, true, true)
	r.Namespaces.Rooms = []Namespace{{Regex: "!r"}}
	s := start(t, testConfig(t, r))
	require.NoError(t, s.EnqueueEphemeral(ctx, typingIn(t, "!r:example.org", "x1"), presenceOf(t, "@a_p:example.org", "x2")))
	waitReceived(t, as, "x1")
	reqs := as.Requests()
	require.Len(t, reqs, 4)
	for _, r := range reqs[1:] {
		assert.Equal(t, reqs[0].TxnID, r.TxnID)
		assert.Equal(t, string(reqs[0].Body), string(r.Body))
	}
	assert.Contains(t, string(reqs[0].Body), `"x2"`)
}

// TestBodyFormatIsFixedWhenTheTxnIsFormed: a transaction stored under one
// registration is resent byte for byte after the registration's opt-ins
// changed; transactions formed afterwards follow the new registration.
func TestBodyFormatIsFixedWhenTheTxnIsFormed(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	r := withFlags(reg("a", as, "@a_"), true, false, false)
	r.Namespaces.Rooms = []Namespace{{Regex: "!r"}}
	cfg := testConfig(t, r)
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.EnqueueEphemeral(ctx, typingIn(t, "!r:example.org", "before")))
	waitFor(t, "a failed attempt", func() bool { return as.Stats().Failed > 0 })
	require.NoError(t, s.Stop(ctx))
	first := as.Requests()[0]
	require.True(t, strings.HasPrefix(string(first.Body), `{"events":[],"ephemeral":[`), "%s", first.Body)

	// The service now opts in to the unstable key only.
	r2 := withFlags(reg("a", as, "@a_"), false, true, false)
	r2.Namespaces.Rooms = r.Namespaces.Rooms
	cfg.Services = []*Registration{r2}
	as.Up()
	s2 := start(t, cfg)
	waitReceived(t, as, "before")
	require.NoError(t, s2.EnqueueEphemeral(ctx, typingIn(t, "!r:example.org", "after")))
	waitReceived(t, as, "after")

	bodies := txnBodies(as)
	require.Len(t, bodies, 2)
	assert.Equal(t, string(first.Body), string(bodies[0]), "the stored transaction keeps its format")
	assert.Equal(t, []string{"de.sorunome.msc2409.ephemeral", "events"}, keysOf(bodyKeys(t, bodies[1])))
}
