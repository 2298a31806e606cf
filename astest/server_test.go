package astest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/astest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// client sends requests to a Server as a homeserver does.
type client struct {
	t   *testing.T
	as  *astest.Server
	hc  *http.Client
	tok string
}

func newClient(t *testing.T, as *astest.Server) *client {
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return &client{t: t, as: as, hc: hc, tok: as.HSToken()}
}

// do sends a request and returns the status of the answer and its body,
// or 0 and the error when there was no answer.
func (c *client) do(ctx context.Context, method, path, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.as.URL()+path, strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Authorization", "Bearer "+c.tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer), err
}

// put sends a transaction and returns the status of the answer.
func (c *client) put(txnID, body string) int {
	c.t.Helper()
	status, _, err := c.do(context.Background(), http.MethodPut, "/_matrix/app/v1/transactions/"+txnID, body)
	require.NoError(c.t, err)
	return status
}

// events returns a body with the events of the given IDs.
func events(ids ...string) string {
	var evs []string
	for _, id := range ids {
		evs = append(evs, fmt.Sprintf(`{"event_id":%q,"room_id":"!r:example.org","sender":"@a:example.org","type":"m.room.message","content":{"body":"hi"}}`, id))
	}
	return `{"events":[` + strings.Join(evs, ",") + `]}`
}

// deadline is a context for waits that should not outlive the test.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRecordsRequestsDeliveriesAndCounts(t *testing.T) {
	as := astest.New(t, "hs-secret")
	c := newClient(t, as)

	assert.Equal(t, http.StatusOK, c.put("1", events("$a", "$b")))
	assert.Equal(t, http.StatusOK, c.put("2", events("$b", "$c")))
	status, answer, err := c.do(context.Background(), http.MethodPost, "/_matrix/app/v1/ping", `{"transaction_id":"p"}`)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "{}", answer)

	assert.Equal(t, []string{"$a", "$b", "$c"}, as.Delivered())
	assert.Equal(t, 2, as.Deliveries("$b"))
	assert.Equal(t, 1, as.Deliveries("$c"))
	assert.Zero(t, as.Deliveries("$nope"))
	assert.Equal(t, astest.Stats{Arrived: 3, Requests: 3, Txns: 2, Events: 4, MaxInFlight: 1}, as.Stats())
	assert.Empty(t, as.Problems())

	reqs := as.Requests()
	require.Len(t, reqs, 3)
	r := reqs[0]
	assert.Equal(t, 0, r.N)
	assert.Equal(t, http.MethodPut, r.Method)
	assert.Equal(t, "/_matrix/app/v1/transactions/1", r.Path)
	assert.Equal(t, "1", r.TxnID)
	assert.Equal(t, "Bearer hs-secret", r.Auth)
	assert.Equal(t, "application/json", r.ContentType)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, events("$a", "$b"), string(r.Body))
	assert.Equal(t, http.StatusOK, r.Status)
	assert.False(t, r.Done.Before(r.Arrived))
	require.NotNil(t, r.Txn)
	require.Len(t, r.Txn.Events, 2)
	assert.Equal(t, astest.Event{ID: "$a", RoomID: "!r:example.org", Sender: "@a:example.org", Type: "m.room.message",
		Content: []byte(`{"body":"hi"}`)}, r.Txn.Events[0])

	ping := reqs[2]
	assert.Equal(t, "/_matrix/app/v1/ping", ping.Path)
	assert.Empty(t, ping.TxnID)
	assert.Nil(t, ping.Txn, "a ping is not a transaction")
}

func TestDecodesEveryKeyOfATransaction(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)
	typing := `{"type":"m.typing","room_id":"!r","content":{"user_ids":["@a:x"]}}`
	otk := `{"@a:x":{"DEV":{"signed_curve25519":3}}}`
	body := `{"events":[{"event_id":"$s","room_id":"!r","sender":"@a:x","type":"m.room.member","state_key":"@a:x","content":{}}],` +
		`"ephemeral":[` + typing + `],"de.sorunome.msc2409.ephemeral":[` + typing + `],` +
		`"de.sorunome.msc2409.to_device":[{"type":"m.x","sender":"@b:x","to_user_id":"@a:x","to_device_id":"DEV","content":{}}],` +
		`"org.matrix.msc3202.device_lists":{"changed":["@a:x"],"left":["@b:x"]},` +
		`"org.matrix.msc3202.device_one_time_key_counts":` + otk + `,"org.matrix.msc3202.device_one_time_keys_count":` + otk + `,` +
		`"org.matrix.msc3202.device_unused_fallback_key_types":{"@a:x":{"DEV":["signed_curve25519"]}}}`
	require.Equal(t, http.StatusOK, c.put("1", body))

	txn := as.Requests()[0].Txn
	require.NotNil(t, txn)
	require.Len(t, txn.Events, 1)
	require.NotNil(t, txn.Events[0].StateKey)
	assert.Equal(t, "@a:x", *txn.Events[0].StateKey)
	assert.Equal(t, typing, string(txn.Ephemeral[0]))
	assert.Equal(t, typing, string(txn.EphemeralUnstable[0]))
	assert.Len(t, txn.ToDevice, 1)
	assert.Equal(t, &astest.DeviceLists{Changed: []string{"@a:x"}, Left: []string{"@b:x"}}, txn.DeviceLists)
	assert.Equal(t, 3, txn.OneTimeKeyCounts["@a:x"]["DEV"]["signed_curve25519"])
	assert.Equal(t, []string{"signed_curve25519"}, txn.FallbackKeyTypes["@a:x"]["DEV"])
	assert.Empty(t, as.Problems())
}

func TestRefusesWhatAnApplicationServiceRefuses(t *testing.T) {
	as := astest.NewServer("tok")
	defer as.Close()
	c := newClient(t, as)

	c.tok = "wrong"
	assert.Equal(t, http.StatusForbidden, c.put("1", events("$a")))
	c.tok = as.HSToken()
	status, _, err := c.do(context.Background(), http.MethodGet, "/_matrix/app/v1/users/@a:x", "")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, status)
	assert.Equal(t, http.StatusBadRequest, c.put("2", `{"ephemeral":[]}`), "no events")
	assert.Equal(t, http.StatusBadRequest, c.put("3", `not json`))

	assert.Empty(t, as.Delivered())
	assert.Equal(t, astest.Stats{Arrived: 4, Requests: 4, Failed: 4, MaxInFlight: 1}, as.Stats())
	assert.Equal(t, []string{
		`txn 2: body has no "events"`,
		"txn 3: body is not a JSON object: invalid character 'o' in literal null (expecting 'u')",
	}, as.Problems())
	assert.Equal(t, "1", as.Requests()[0].TxnID)
	assert.NotNil(t, as.Requests()[0].Txn, "decoded, though refused")
}

// recordingTB is a testing.TB that keeps what New reports.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	cleanups []func()
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func TestProblemsFailTheTest(t *testing.T) {
	tb := &recordingTB{TB: t}
	as := astest.New(tb, "tok")
	c := newClient(t, as)

	as.Down()
	assert.Equal(t, http.StatusServiceUnavailable, c.put("7", events("$a")))
	as.Up()
	assert.Equal(t, http.StatusOK, c.put("7", events("$a")), "resent after a failure, same bytes")
	assert.Equal(t, http.StatusOK, c.put("7", events("$a")), "resent after a success, same bytes")
	assert.Equal(t, http.StatusOK, c.put("7", events("$b")), "resent with other bytes")
	both := `{"events":[],"ephemeral":[{"a":1}],"de.sorunome.msc2409.ephemeral":[{"a":2}]}`
	assert.Equal(t, http.StatusOK, c.put("8", both))

	problems := as.Problems()
	require.Len(t, problems, 2)
	assert.True(t, strings.HasPrefix(problems[0], "txn 7: sent again with a different body: 131 then 131 bytes, first difference at byte 25: "), problems[0])
	assert.Equal(t, `txn 8: "ephemeral" and "de.sorunome.msc2409.ephemeral" differ`, problems[1])
	tb.mu.Lock()
	assert.Equal(t, []string{"astest: " + problems[0], "astest: " + problems[1]}, tb.errors)
	tb.mu.Unlock()

	require.Len(t, tb.cleanups, 1, "New registers Close")
	tb.cleanups[0]()
	_, _, err := c.do(context.Background(), http.MethodPut, "/_matrix/app/v1/transactions/9", events("$c"))
	assert.Error(t, err, "closed")
}

func TestFailWithDownAndUp(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)

	as.FailWith(func(n int) int {
		if n == 1 {
			return http.StatusBadGateway
		}
		return 0
	})
	assert.Equal(t, http.StatusOK, c.put("1", events("$1")))
	assert.Equal(t, http.StatusBadGateway, c.put("2", events("$2")))
	assert.Equal(t, http.StatusOK, c.put("2", events("$2")))
	as.Down()
	status, answer, err := c.do(context.Background(), http.MethodPost, "/_matrix/app/v1/ping", "{}")
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"errcode":"M_UNKNOWN","error":"failing on purpose (503)"}`, answer)
	assert.Equal(t, http.StatusServiceUnavailable, c.put("3", events("$3")))
	as.Up()
	assert.Equal(t, http.StatusOK, c.put("3", events("$3")))

	assert.Equal(t, []string{"$1", "$2", "$3"}, as.Delivered())
	var statuses []int
	for _, r := range as.Requests() {
		statuses = append(statuses, r.Status)
	}
	assert.Equal(t, []int{200, 502, 200, 503, 503, 200}, statuses)
	assert.Equal(t, 3, as.Stats().Failed)
}

func TestHangUntilReleaseOrTheSenderGivesUp(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)
	as.Hang()

	answered := make(chan int)
	go func() { answered <- c.put("1", events("$1")) }()
	require.NoError(t, as.WaitArrived(deadline(t), 1))
	assert.Empty(t, as.Requests(), "in flight")

	// A sender that gives up leaves a request recorded with Status 0.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err := c.do(ctx, http.MethodPost, "/_matrix/app/v1/ping", "{}")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, as.Wait(deadline(t), func() bool { return as.Stats().Requests == 1 }))
	assert.Equal(t, 0, as.Requests()[0].Status)

	as.Release()
	assert.Equal(t, http.StatusOK, <-answered)
	require.NoError(t, as.WaitDelivered(deadline(t), 1))
	assert.Equal(t, http.StatusOK, c.put("2", events("$2")), "not held after Release")
}

func TestDelayAnswersSlowly(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)
	const d = 30 * time.Millisecond
	as.Delay(d)
	assert.Equal(t, http.StatusOK, c.put("1", events("$1")))
	as.Delay(0)
	assert.Equal(t, http.StatusOK, c.put("2", events("$2")))
	reqs := as.Requests()
	assert.GreaterOrEqual(t, reqs[0].Done.Sub(reqs[0].Arrived), d)
}

func TestRespondHoldsDropsAndCallsBack(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)
	hold := make(chan struct{})
	var mu sync.Mutex
	var steps []string
	step := func(s string) {
		mu.Lock()
		steps = append(steps, s)
		mu.Unlock()
	}
	as.Respond(func(r astest.Request) astest.Answer {
		step("respond " + r.TxnID)
		switch r.TxnID {
		case "1":
			return astest.Answer{Hold: hold, Status: http.StatusTooManyRequests,
				Recorded: func() { step("recorded 1") }, Answered: func() { step("answered 1") }}
		case "2":
			return astest.Answer{Drop: true}
		}
		return astest.Answer{Delay: time.Millisecond}
	})

	answered := make(chan int)
	go func() { answered <- c.put("1", events("$1")) }()
	require.NoError(t, as.WaitArrived(deadline(t), 1))
	close(hold)
	assert.Equal(t, http.StatusTooManyRequests, <-answered)

	_, _, err := c.do(context.Background(), http.MethodPut, "/_matrix/app/v1/transactions/2", events("$2"))
	assert.Error(t, err, "dropped: no answer")
	assert.Equal(t, http.StatusOK, c.put("3", events("$3")))

	mu.Lock()
	assert.Equal(t, []string{"respond 1", "recorded 1", "answered 1", "respond 2", "respond 3"}, steps)
	mu.Unlock()
	var statuses []int
	for _, r := range as.Requests() {
		statuses = append(statuses, r.Status)
	}
	assert.Equal(t, []int{429, 0, 200}, statuses)
	assert.Equal(t, []string{"$3"}, as.Delivered())
}

func TestTruncatedBodyIsRecordedUnanswered(t *testing.T) {
	as := astest.New(t, "tok")
	conn, err := net.Dial("tcp", strings.TrimPrefix(as.URL(), "http://"))
	require.NoError(t, err)
	_, err = fmt.Fprintf(conn, "PUT /_matrix/app/v1/transactions/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"+
		"Content-Length: 100\r\n\r\n{\"events\":[")
	require.NoError(t, err)
	require.NoError(t, as.WaitArrived(deadline(t), 0)) // nothing to wait for
	require.NoError(t, conn.Close())
	require.NoError(t, as.Wait(deadline(t), func() bool { return as.Stats().Requests == 1 }))
	r := as.Requests()[0]
	assert.True(t, r.Truncated)
	assert.Equal(t, 0, r.Status)
	assert.Nil(t, r.Txn)
	assert.Empty(t, as.Problems())
}

func TestCountOnlyKeepsCounts(t *testing.T) {
	as := astest.New(t, "tok")
	as.CountOnly()
	c := newClient(t, as)
	assert.Equal(t, http.StatusOK, c.put("1", events("$1", "$2")))
	assert.Equal(t, http.StatusOK, c.put("1", events("$other")), "bodies are not kept")
	as.Down()
	assert.Equal(t, http.StatusServiceUnavailable, c.put("2", events("$3")))

	assert.Equal(t, astest.Stats{Arrived: 3, Requests: 3, Failed: 1, Txns: 2, Events: 3, MaxInFlight: 1}, as.Stats())
	assert.Empty(t, as.Requests())
	assert.Empty(t, as.Delivered())
	assert.Empty(t, as.Problems())
}

func TestWaitEndsWithTheContext(t *testing.T) {
	as := astest.New(t, "tok")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := as.WaitDelivered(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "astest: 0 of 1 events delivered: context deadline exceeded", err.Error())
	err = as.WaitArrived(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "astest: 0 of 1 requests arrived: context deadline exceeded", err.Error())
	require.ErrorIs(t, as.Wait(ctx, func() bool { return false }), context.DeadlineExceeded)
}

func TestCloseDropsWaitingRequests(t *testing.T) {
	as := astest.NewServer("tok")
	c := newClient(t, as)
	as.Hang()
	done := make(chan error)
	go func() {
		_, _, err := c.do(context.Background(), http.MethodPut, "/_matrix/app/v1/transactions/1", events("$1"))
		done <- err
	}()
	require.NoError(t, as.WaitArrived(deadline(t), 1))
	as.Close()
	assert.Error(t, <-done, "dropped unanswered")
	as.Close()
	require.Len(t, as.Requests(), 1)
	assert.Equal(t, 0, as.Requests()[0].Status)
	assert.True(t, bytes.Contains(as.Requests()[0].Body, []byte("$1")))
}

func TestMaxInFlightCountsOverlappingTransactions(t *testing.T) {
	as := astest.New(t, "tok")
	c := newClient(t, as)
	assert.Equal(t, http.StatusOK, c.put("1", events("$1")))
	assert.Equal(t, http.StatusOK, c.put("2", events("$2")))
	assert.Equal(t, 1, as.Stats().MaxInFlight, "one after the other")

	as.Hang()
	answered := make(chan int, 2)
	go func() { answered <- c.put("3", events("$3")) }()
	go func() { answered <- c.put("4", events("$4")) }()
	require.NoError(t, as.WaitArrived(deadline(t), 4))
	as.Release()
	<-answered
	<-answered
	assert.Equal(t, 2, as.Stats().MaxInFlight, "two at once")
}
