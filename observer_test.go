package scheduler

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
)

// recordingObserver keeps every Delivery.
type recordingObserver struct {
	mu   sync.Mutex
	seen []Delivery
}

func (o *recordingObserver) Delivered(d Delivery) {
	o.mu.Lock()
	o.seen = append(o.seen, d)
	o.mu.Unlock()
}

func (o *recordingObserver) deliveries() []Delivery {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Delivery(nil), o.seen...)
}

// TestObserverSeesEveryAttempt: through a scripted outage (two failed
// attempts, then success) the Observer hears of each attempt, with the
// transaction's items by kind, its size and the AS's answer.
func TestObserverSeesEveryAttempt(t *testing.T) {
	as := astest.New(t, "tok")
	as.FailWith(func(n int) int {
		if n < 2 {
			return 500
		}
		return 200
	})
	r := reg("a", as, "@a_.*")
	r.ReceiveEphemeral = true
	cfg := testConfig(t, r)
	obs := &recordingObserver{}
	cfg.Observer = obs
	s := start(t, cfg)
	ctx := context.Background()
	require.NoError(t, s.EnqueueToDevice(ctx, ToDeviceMessage{Sender: "@b:example.org", Type: "m.room_key_request",
		ToUserID: "@a_x:example.org", ToDeviceID: "DEV", Content: []byte(`{}`)}))
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x"), event("$2", "!r", "@a_x")))
	waitDelivered(t, as, 2)

	delivered := func(ds []Delivery) int {
		n := 0
		for _, d := range ds {
			if d.Err == nil {
				n += d.Events + d.ToDevice
			}
		}
		return n
	}
	waitFor(t, "the observer to hear of the successes", func() bool { return delivered(obs.deliveries()) >= 3 })
	ds := obs.deliveries()
	require.GreaterOrEqual(t, len(ds), 3)
	for i, d := range ds {
		assert.Equal(t, "a", d.ServiceID)
		assert.Positive(t, d.Bytes)
		if i < 2 {
			assert.Error(t, d.Err, "attempt %d", i)
			assert.Equal(t, 500, d.Status)
		}
		if d.Err == nil {
			assert.Equal(t, 200, d.Status)
		}
	}
	assert.Equal(t, 3, delivered(ds), "two events and one to-device message delivered")
	assert.Equal(t, ds[0].TxnID, ds[1].TxnID, "the retry carries the same ID")
}

// TestObserverPanicDoesNotStopDelivery: a panicking Observer is logged
// and delivery goes on.
func TestObserverPanicDoesNotStopDelivery(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.Observer = panicObserver{}
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))
	waitDelivered(t, as, 1)
	require.NoError(t, s.Enqueue(context.Background(), event("$2", "!r", "@a_x")))
	waitDelivered(t, as, 2)
}

type panicObserver struct{}

func (panicObserver) Delivered(Delivery) { panic("observer bug") }

// TestStatusesListsConfiguredAndLeftoverServices: Statuses reports every
// configured service, idle or not, and a service the Store holds work for
// that is no longer configured, sorted by ID.
func TestStatusesListsConfiguredAndLeftoverServices(t *testing.T) {
	ctx := context.Background()
	up, down := astest.New(t, "tok-up"), astest.New(t, "tok-down")
	down.Down()
	cfg := testConfig(t, reg("up", up, "@up_.*"), reg("down", down, "@down_.*"))
	require.NoError(t, cfg.Store.Append(ctx, []store.Entry{{
		Item:     store.Item{Kind: store.KindEvent, Key: "$old", Data: []byte(`{"event_id":"$old"}`)},
		Services: []string{"gone"},
	}}))
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@down_x")))
	waitDown(t, s, "down")

	all, err := s.Statuses(ctx)
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, []string{"down", "gone", "up"}, []string{all[0].ID, all[1].ID, all[2].ID})
	assert.Equal(t, StateDown, all[0].State)
	assert.Equal(t, 1, all[0].StoredTxns)
	assert.Positive(t, all[0].ConsecutiveFailures)
	assert.Equal(t, StateUnconfigured, all[1].State)
	assert.Equal(t, 1, all[1].QueuedEvents)
	assert.Equal(t, ServiceStatus{ID: "up", State: StateUp}, all[2])
	for _, st := range all {
		one, err := s.Status(ctx, st.ID)
		require.NoError(t, err)
		assert.Equal(t, st.ID, one.ID)
		assert.Equal(t, st.State, one.State)
	}
}
