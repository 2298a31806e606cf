package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
)

// request is one request a fakeAS received, whatever it answered.
type request struct {
	Method, Path, Query string
	Auth, ContentType   string
	TxnID               string
	Body                []byte
	Status              int // what the fake answered
}

// fakeAS is an application service on 127.0.0.1 that records every request
// and answers as its failure policy says. It decodes every body as an AS
// would, and records event IDs in the order of their first delivery.
type fakeAS struct {
	t     testing.TB
	srv   *httptest.Server
	token string

	mu        sync.Mutex
	requests  []request
	delivered []string          // event IDs, first successful delivery order
	seen      map[string]int    // event ID → successful deliveries
	bodies    map[string][]byte // txn ID → first body received
	failNext  func(n int) int   // status for the n-th request (0-based); 0 = success
	hang      chan struct{}     // when set, requests block until it is closed
	arrived   chan struct{}     // signalled on every request
}

func newFakeAS(t testing.TB, token string) *fakeAS {
	as := &fakeAS{t: t, token: token, seen: map[string]int{}, bodies: map[string][]byte{}, arrived: make(chan struct{}, 1)}
	as.srv = httptest.NewServer(http.HandlerFunc(as.serve))
	t.Cleanup(func() {
		as.release()
		as.srv.Close()
	})
	return as
}

func (as *fakeAS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		TxnID: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), Body: body,
	}
	as.mu.Lock()
	n := len(as.requests)
	status := http.StatusOK
	if as.failNext != nil {
		if s := as.failNext(n); s != 0 {
			status = s
		}
	}
	hang := as.hang
	as.mu.Unlock()
	select {
	case as.arrived <- struct{}{}:
	default:
	}
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			status = 0
		}
	}
	if req.Auth != "Bearer "+as.token {
		status = http.StatusForbidden
	}
	req.Status = status
	as.mu.Lock()
	as.requests = append(as.requests, req)
	// Only transactions carry events; a ping is recorded, not decoded.
	if status == http.StatusOK && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
		if prev, ok := as.bodies[req.TxnID]; ok {
			if string(prev) != string(body) {
				as.t.Errorf("txn %s resent with a different body:\n%s\n%s", req.TxnID, prev, body)
			}
		} else {
			as.bodies[req.TxnID] = body
		}
		var parsed struct {
			Events []struct {
				ID string `json:"event_id"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &parsed); err != nil {
			as.t.Errorf("txn %s: body is not JSON: %v", req.TxnID, err)
		}
		for _, e := range parsed.Events {
			if as.seen[e.ID] == 0 {
				as.delivered = append(as.delivered, e.ID)
			}
			as.seen[e.ID]++
		}
	}
	as.mu.Unlock()
	if status == 0 {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status == http.StatusOK {
		_, _ = w.Write([]byte(`{}`))
	} else {
		_, _ = fmt.Fprintf(w, `{"errcode":"M_UNKNOWN","error":"failing on purpose (%d)"}`, status)
	}
}

// setFail installs a failure policy; nil means always succeed.
func (as *fakeAS) setFail(f func(n int) int) {
	as.mu.Lock()
	as.failNext = f
	as.mu.Unlock()
}

// down makes every request fail with 503 until up is called.
func (as *fakeAS) down() { as.setFail(func(int) int { return http.StatusServiceUnavailable }) }
func (as *fakeAS) up()   { as.setFail(nil) }

// hangRequests makes requests block until release.
func (as *fakeAS) hangRequests() {
	as.mu.Lock()
	as.hang = make(chan struct{})
	as.mu.Unlock()
}

func (as *fakeAS) release() {
	as.mu.Lock()
	if as.hang != nil {
		close(as.hang)
		as.hang = nil
	}
	as.mu.Unlock()
}

func (as *fakeAS) deliveredIDs() []string {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]string(nil), as.delivered...)
}

func (as *fakeAS) allRequests() []request {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]request(nil), as.requests...)
}

// successes returns the successful requests in arrival order.
func (as *fakeAS) successes() []request {
	var out []request
	for _, r := range as.allRequests() {
		if r.Status == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// failures counts the requests answered with an error.
func (as *fakeAS) failures() int {
	n := 0
	for _, r := range as.allRequests() {
		if r.Status != http.StatusOK {
			n++
		}
	}
	return n
}

func (as *fakeAS) count(eventID string) int {
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.seen[eventID]
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: tests wait on conditions, never on guessed sleeps.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitDelivered waits until as has received n distinct events.
func waitDelivered(t testing.TB, as *fakeAS, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d events delivered", n), func() bool { return len(as.deliveredIDs()) >= n })
}

// reg builds a registration for as with the given users namespace regex.
func reg(id string, as *fakeAS, users ...string) *Registration {
	r := &Registration{
		ID: id, ASToken: "as_" + id, HSToken: "hs_" + id, SenderLocalpart: id + "bot",
	}
	if as != nil {
		r.URL = as.srv.URL
		r.HSToken = as.token
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
	append  func(ctx context.Context, entries []store.Entry) error
	nextTxn func(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error)
	txns    func(ctx context.Context, service string, limit int) ([]store.Txn, error)
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

// txnEvents returns the number of events in a transaction body.
func txnEvents(t testing.TB, body []byte) int {
	var parsed struct {
		Events []json.RawMessage `json:"events"`
	}
	require.NoError(t, json.Unmarshal(body, &parsed))
	return len(parsed.Events)
}
