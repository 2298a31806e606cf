package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
)

// successes returns the requests as answered with 200, in the order they
// ended.
func successes(as *astest.Server) []astest.Request {
	var out []astest.Request
	for _, r := range as.Requests() {
		if r.Status == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// waitTimeout bounds every wait on a condition: generous, as the
// conditions are met in milliseconds when things work.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds, failing the test after a generous
// deadline: tests wait on conditions, never on guessed sleeps.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitDelivered waits until as has received n distinct events.
func waitDelivered(t testing.TB, as *astest.Server, n int) {
	t.Helper()
	require.NoError(t, as.WaitDelivered(waitContext(t), n))
}

// waitArrived waits until n requests have arrived at as, answered or not.
func waitArrived(t testing.TB, as *astest.Server, n int) {
	t.Helper()
	require.NoError(t, as.WaitArrived(waitContext(t), n))
}

// waitContext bounds a wait as waitFor does.
func waitContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// reg builds a registration for as with the given users namespace regex.
func reg(id string, as *astest.Server, users ...string) *Registration {
	r := &Registration{
		ID: id, ASToken: "as_" + id, HSToken: "hs_" + id, SenderLocalpart: id + "bot",
	}
	if as != nil {
		r.URL = as.URL()
		r.HSToken = as.HSToken()
	}
	for _, u := range users {
		r.Namespaces.Users = append(r.Namespaces.Users, Namespace{Regex: u, Exclusive: true})
	}
	return r
}

// event builds a valid m.room.message event.
func event(id, room, sender string) Event {
	raw, err := json.Marshal(map[string]any{
		"event_id": id, "room_id": room, "sender": sender, "type": "m.room.message",
		"origin_server_ts": 1700000000000, "content": map[string]any{"msgtype": "m.text", "body": "hello " + id},
	})
	if err != nil {
		panic(err)
	}
	return Event{ID: id, RoomID: room, Sender: sender, Type: "m.room.message", Raw: raw}
}

// member builds a valid m.room.member event.
func member(id, room, sender, target string) Event {
	raw, err := json.Marshal(map[string]any{
		"event_id": id, "room_id": room, "sender": sender, "type": "m.room.member",
		"state_key": target, "content": map[string]any{"membership": "join"},
	})
	if err != nil {
		panic(err)
	}
	return Event{ID: id, RoomID: room, Sender: sender, Type: "m.room.member", StateKey: &target, Raw: raw}
}

// testConfig returns a Config on a fresh memory store with fast retries.
func testConfig(t testing.TB, services ...*Registration) Config {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	return Config{
		ServerName:   "example.org",
		Services:     services,
		Store:        st,
		RetryInitial: 5 * time.Millisecond,
		RetryMax:     20 * time.Millisecond,
		// The poller would hide a lost wake-up: tests rely on it only
		// where they say so.
		PollInterval: time.Hour,
	}
}

// start creates and starts a Scheduler, stopping it at cleanup.
func start(t testing.TB, cfg Config) *Scheduler {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return s
}

// storeFunc wraps a Store so a test can intercept some of its methods.
type storeFunc struct {
	store.Store
	append   func(ctx context.Context, entries []store.Entry) error
	nextTxn  func(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error)
	txns     func(ctx context.Context, service string, limit int) ([]store.Txn, error)
	complete func(ctx context.Context, service string, epoch store.Epoch, id int64) error
}

func (w *storeFunc) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	if w.complete != nil {
		return w.complete(ctx, service, epoch, id)
	}
	return w.Store.Complete(ctx, service, epoch, id)
}

func (w *storeFunc) Txns(ctx context.Context, service string, limit int) ([]store.Txn, error) {
	if w.txns != nil {
		return w.txns(ctx, service, limit)
	}
	return w.Store.Txns(ctx, service, limit)
}

func (w *storeFunc) Append(ctx context.Context, entries []store.Entry) error {
	if w.append != nil {
		return w.append(ctx, entries)
	}
	return w.Store.Append(ctx, entries)
}

// AppendOrdered keeps the wrapped store's OrderedAppender visible. A store
// without one, or an intercepted Append, is ordered once it has returned.
func (w *storeFunc) AppendOrdered(ctx context.Context, entries []store.Entry, queued func()) error {
	if oa, ok := w.Store.(store.OrderedAppender); ok && w.append == nil {
		return oa.AppendOrdered(ctx, entries, queued)
	}
	if err := w.Append(ctx, entries); err != nil {
		return err
	}
	queued()
	return nil
}

func (w *storeFunc) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	if w.nextTxn != nil {
		return w.nextTxn(ctx, service, epoch, format, lim)
	}
	return w.Store.NextTxn(ctx, service, epoch, format, lim)
}
