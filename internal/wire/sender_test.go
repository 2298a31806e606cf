package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	hsToken = "hs-secret-0123456789abcdef"
	asToken = "as-secret-fedcba9876543210"
)

// gotRequest is what a test AS received.
type gotRequest struct {
	Method           string
	Path             string
	Header           http.Header
	Body             string
	ContentLength    int64
	TransferEncoding []string
}

// testAS is an application service on 127.0.0.1 that records every request
// and counts the connections it accepted.
type testAS struct {
	*httptest.Server
	newConns atomic.Int64

	mu  sync.Mutex
	got []gotRequest
}

// startAS starts a test AS that records each request, body read in full,
// then lets answer write the answer.
func startAS(t testing.TB, answer http.HandlerFunc) *testAS {
	t.Helper()
	as := &testAS{}
	as.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		as.mu.Lock()
		as.got = append(as.got, gotRequest{
			Method:           r.Method,
			Path:             r.URL.Path,
			Header:           r.Header.Clone(),
			Body:             string(body),
			ContentLength:    r.ContentLength,
			TransferEncoding: r.TransferEncoding,
		})
		as.mu.Unlock()
		answer(w, r)
	}))
	as.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			as.newConns.Add(1)
		}
	}
	as.Start()
	t.Cleanup(as.Close)
	return as
}

// requests returns what the AS received so far.
func (as *testAS) requests() []gotRequest {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]gotRequest(nil), as.got...)
}

func (as *testAS) endpoint() Endpoint {
	return Endpoint{URL: as.URL, HSToken: hsToken, Redact: []string{asToken}}
}

// answer returns a handler that answers status with body.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// newSender returns a Sender whose idle connections are closed when the test
// ends (before its servers close: cleanups run last in, first out).
func newSender(t testing.TB, client *http.Client, connectTimeout, answerTimeout time.Duration) *Sender {
	t.Helper()
	s := NewSender(client, connectTimeout, answerTimeout)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

// callerClient returns a client as a caller would supply it: no timeouts,
// default redirect policy, its own transport, closed when the test ends.
func callerClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// clients lists the two kinds of client a Sender works with.
var clients = []struct {
	name string
	new  func(testing.TB) *http.Client
}{
	{"own client", func(testing.TB) *http.Client { return nil }},
	{"caller client", callerClient},
}

func TestPutTxnSendsTransaction(t *testing.T) {
	body := []byte(`{"events":[{"type":"m.room.message","content":{"body":"h\u00e9llo"}}]}`)
	as := startAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	tests := []struct {
		base, wantPath string
	}{
		{as.URL, "/_matrix/app/v1/transactions/42"},
		{as.URL + "/", "/_matrix/app/v1/transactions/42"},
		{as.URL + "/bridge", "/bridge/_matrix/app/v1/transactions/42"},
		{as.URL + "/bridge/", "/bridge/_matrix/app/v1/transactions/42"},
	}
	for i, tt := range tests {
		res, err := s.PutTxn(t.Context(), Endpoint{URL: tt.base, HSToken: hsToken}, 42, body)
		require.NoError(t, err)
		require.Equal(t, Result{Status: 200, Excerpt: "{}"}, res)

		got := as.requests()
		require.Len(t, got, i+1)
		r := got[i]
		require.Equal(t, http.MethodPut, r.Method)
		require.Equal(t, tt.wantPath, r.Path)
		require.Equal(t, []string{"Bearer " + hsToken}, r.Header["Authorization"])
		require.Equal(t, []string{"application/json"}, r.Header["Content-Type"])
		require.NotContains(t, r.Header, "Idempotency-Key", "the idempotency marker stays off the wire")
		require.Equal(t, string(body), r.Body, "body sent byte for byte")
		require.Equal(t, int64(len(body)), r.ContentLength)
		require.Empty(t, r.TransferEncoding, "not chunked")
	}
}

func TestPutTxnLargeTransactionIDIsDecimal(t *testing.T) {
	as := startAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	_, err := s.PutTxn(t.Context(), as.endpoint(), 1700000000123456789, []byte(`{"events":[]}`))
	require.NoError(t, err)
	require.Equal(t, "/_matrix/app/v1/transactions/1700000000123456789", as.requests()[0].Path)
}

func TestPutTxnOutcome(t *testing.T) {
	big := `{"a":"` + strings.Repeat("x", maxAnswer-8) + `"}`
	require.Len(t, big, maxAnswer)
	tests := []struct {
		name    string
		status  int
		body    string
		ok      bool
		excerpt string
		reason  string
	}{
		{name: "200 {}", status: 200, body: `{}`, ok: true, excerpt: "{}"},
		{name: "200 object", status: 200, body: `{"ok":true}`, ok: true, excerpt: `{"ok":true}`},
		{name: "200 JSON with white space", status: 200, body: " {}\n", ok: true, excerpt: " {} "},
		{name: "201 {}", status: 201, body: `{}`, ok: true, excerpt: "{}"},
		{name: "200 JSON of exactly 64 KiB", status: 200, body: big, ok: true, excerpt: big[:excerptMax] + "..."},
		{name: "200 empty", status: 200, body: ``, reason: "empty answer, JSON expected"},
		{name: "200 not JSON", status: 200, body: `OK`, excerpt: "OK", reason: "answer is not JSON"},
		{name: "200 truncated JSON", status: 200, body: `{"a":`, excerpt: `{"a":`, reason: "answer is not JSON"},
		{name: "204", status: 204, body: ``, reason: "empty answer, JSON expected"},
		{name: "200 over 64 KiB", status: 200, body: big + " ", excerpt: big[:excerptMax] + "...", reason: "answer larger than 64 KiB"},
		{
			name: "401", status: 401, body: `{"errcode":"M_UNKNOWN_TOKEN"}`,
			excerpt: `{"errcode":"M_UNKNOWN_TOKEN"}`, reason: "status is not 2xx",
		},
		{
			name: "403", status: 403, body: `{"errcode":"M_FORBIDDEN"}`,
			excerpt: `{"errcode":"M_FORBIDDEN"}`, reason: "status is not 2xx",
		},
		{
			name: "500 with an HTML page", status: 500, body: "<html>\n<body>\x00oops\xff</body>",
			excerpt: "<html> <body>?oops?</body>", reason: "status is not 2xx",
		},
		{name: "404 empty", status: 404, body: ``, reason: "status is not 2xx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := startAS(t, answer(tt.status, tt.body))
			s := newSender(t, nil, 0, 0)
			res, err := s.PutTxn(t.Context(), as.endpoint(), 7, []byte(`{"events":[]}`))
			require.Equal(t, Result{Status: tt.status, Excerpt: tt.excerpt}, res)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, StatusError{Status: tt.status, Excerpt: tt.excerpt, Reason: tt.reason}, *se)
			require.NotErrorIs(t, err, ErrTimeout)
			require.Contains(t, err.Error(), fmt.Sprintf("PUT transaction 7: AS answered %d", tt.status))
		})
	}
}

func TestPutTxnDoesNotFollowRedirects(t *testing.T) {
	for _, c := range clients {
		for _, status := range []int{301, 302, 303, 307, 308} {
			t.Run(fmt.Sprintf("%s/%d", c.name, status), func(t *testing.T) {
				target := startAS(t, answer(200, `{}`))
				redirecting := startAS(t, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, target.URL+r.URL.Path, status)
				})
				client := c.new(t)
				s := newSender(t, client, 0, 0)

				res, err := s.PutTxn(t.Context(), redirecting.endpoint(), 1, []byte(`{"events":[]}`))
				var se *StatusError
				require.ErrorAs(t, err, &se)
				require.Equal(t, status, se.Status)
				require.Equal(t, status, res.Status)
				require.Len(t, redirecting.requests(), 1)
				require.Empty(t, target.requests(), "redirect not followed")
				if client != nil {
					require.Nil(t, client.CheckRedirect, "caller's client not modified")
				}
			})
		}
	}
}

func TestPutTxnReusesOneConnection(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			var n atomic.Int64
			as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1)%5 == 0 { // failures with a body must not cost the connection
					answer(500, `{"errcode":"M_UNKNOWN","error":"`+strings.Repeat("e", 3000)+`"}`)(w, r)
					return
				}
				answer(200, `{}`)(w, r)
			})
			s := newSender(t, c.new(t), 0, 0)
			body, err := Body(Format, benchItems(10))
			require.NoError(t, err)
			for i := range 50 {
				_, err := s.PutTxn(t.Context(), as.endpoint(), int64(i+1), body)
				if (i+1)%5 == 0 {
					require.Error(t, err)
				} else {
					require.NoError(t, err)
				}
			}
			require.Len(t, as.requests(), 50)
			require.Equal(t, int64(1), as.newConns.Load(), "50 PUTs over one connection")
		})
	}
}

func TestCloseIdleConnectionsClosesOnlyItsOwnClient(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			as := startAS(t, answer(200, `{}`))
			client := c.new(t)
			s := newSender(t, client, 0, 0)
			_, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
			require.NoError(t, err)
			s.CloseIdleConnections()
			_, err = s.PutTxn(t.Context(), as.endpoint(), 2, []byte(`{"events":[]}`))
			require.NoError(t, err)
			want := int64(1) // the caller's idle connection is left alone
			if client == nil {
				want = 2
			}
			require.Equal(t, want, as.newConns.Load())
		})
	}
}

func TestPutTxnResendsWhenKeptAliveConnectionWasClosed(t *testing.T) {
	var n atomic.Int64
	as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 2 {
			// The AS closes the kept-alive connection as the second
			// transaction arrives, before answering.
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		answer(200, `{}`)(w, r)
	})
	s := newSender(t, nil, 0, 0)
	_, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[{"n":1}]}`))
	require.NoError(t, err)
	_, err = s.PutTxn(t.Context(), as.endpoint(), 2, []byte(`{"events":[{"n":2}]}`))
	require.NoError(t, err, "resent on a new connection")

	got := as.requests()
	require.Len(t, got, 3)
	require.Equal(t, got[1], got[2], "the same transaction, byte for byte")
	require.Equal(t, "/_matrix/app/v1/transactions/2", got[2].Path)
	require.Equal(t, int64(2), as.newConns.Load())
}

// blockingDialer is a caller's dialer that never connects: it returns only
// when its context is done.
type blockingDialer struct {
	started  chan struct{}
	returned chan struct{}
}

func (d *blockingDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	close(d.started)
	<-ctx.Done()
	close(d.returned)
	return nil, ctx.Err()
}

func TestConnectTimeoutWithCallerClientWithoutTimeouts(t *testing.T) {
	d := &blockingDialer{started: make(chan struct{}), returned: make(chan struct{})}
	tr := &http.Transport{DialContext: d.DialContext}
	s := newSender(t, &http.Client{Transport: tr}, 50*time.Millisecond, time.Minute)

	begin := time.Now()
	res, err := s.PutTxn(t.Context(), Endpoint{URL: "http://as.invalid", HSToken: hsToken}, 1, []byte(`{"events":[]}`))
	elapsed := time.Since(begin)

	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	require.Equal(t, TimeoutError{Connect: true, After: 50 * time.Millisecond}, *te)
	require.ErrorIs(t, err, ErrTimeout)
	require.NotErrorIs(t, err, context.Canceled)
	require.Equal(t, Result{}, res)
	require.GreaterOrEqual(t, elapsed, 50*time.Millisecond)
	require.Less(t, elapsed, 10*time.Second)
	<-d.started

	// net/http lets the dial go on for a later request; the caller ends it
	// by closing its transport's idle connections.
	tr.CloseIdleConnections()
	<-d.returned
}

func TestAnswerTimeoutWithCallerClientWithoutTimeouts(t *testing.T) {
	tests := []struct {
		name       string
		wantStatus int
		before     func(w http.ResponseWriter) // what the AS sends before it stalls
	}{
		{"no headers", 0, func(http.ResponseWriter) {}},
		{"headers and part of the body", 200, func(w http.ResponseWriter) {
			w.WriteHeader(200)
			io.WriteString(w, `{"a":`)
			http.NewResponseController(w).Flush()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
				tt.before(w)
				select {
				case <-r.Context().Done(): // the client hung up
				case <-release:
				}
			})
			t.Cleanup(func() { close(release) }) // before as.Close
			s := newSender(t, callerClient(t), time.Minute, 100*time.Millisecond)

			res, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
			var te *TimeoutError
			require.ErrorAs(t, err, &te)
			require.Equal(t, TimeoutError{After: 100 * time.Millisecond}, *te)
			require.NotErrorIs(t, err, context.Canceled)
			require.Equal(t, tt.wantStatus, res.Status)
		})
	}
}

func TestCallerClientTimeoutIsATimeout(t *testing.T) {
	release := make(chan struct{})
	as := startAS(t, func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	client := callerClient(t)
	client.Timeout = 50 * time.Millisecond
	s := newSender(t, client, time.Minute, time.Minute)

	_, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	require.Equal(t, TimeoutError{}, *te, "the client's timeout, after the connection was obtained")
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's ctx did not end")
}

func TestConnectTimeoutStopsOnceConnected(t *testing.T) {
	const connectTimeout = 50 * time.Millisecond
	as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
		// Take longer than the connect timeout to answer.
		select {
		case <-time.After(4 * connectTimeout):
		case <-r.Context().Done():
		}
		answer(200, `{}`)(w, r)
	})
	s := newSender(t, callerClient(t), connectTimeout, time.Minute)
	_, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
	require.NoError(t, err)
}

func TestPutTxnCanceledContext(t *testing.T) {
	t.Run("before the call", func(t *testing.T) {
		as := startAS(t, answer(200, `{}`))
		s := newSender(t, nil, 0, 0)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.PutTxn(ctx, as.endpoint(), 1, []byte(`{"events":[]}`))
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, ErrTimeout)
		require.Empty(t, as.requests())
	})

	t.Run("while the AS answers", func(t *testing.T) {
		arrived := make(chan struct{})
		as := startAS(t, func(_ http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done()
		})
		s := newSender(t, nil, 0, 0)
		stopping := errors.New("scheduler stopping")
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() {
			<-arrived
			cancel(stopping)
		}()
		_, err := s.PutTxn(ctx, as.endpoint(), 1, []byte(`{"events":[]}`))
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, stopping)
		require.NotErrorIs(t, err, ErrTimeout)
	})

	t.Run("deadline", func(t *testing.T) {
		as := startAS(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		s := newSender(t, nil, 0, 0)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := s.PutTxn(ctx, as.endpoint(), 1, []byte(`{"events":[]}`))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotErrorIs(t, err, ErrTimeout)
	})
}

func TestExcerptAndErrorRedactTokens(t *testing.T) {
	tests := []struct {
		name string
		body func(r *http.Request) string
	}{
		{"echoed tokens", func(r *http.Request) string {
			return `{"errcode":"M_FORBIDDEN","error":"bad ` + r.Header.Get("Authorization") + ` for ` + asToken + `"}`
		}},
		{"token across the end of the excerpt", func(*http.Request) string {
			return strings.Repeat("x", excerptMax-5) + hsToken + asToken
		}},
		{"tokens echoed JSON-escaped and percent-encoded", func(*http.Request) string {
			return `{"error":"bad token ` + escapeAll(hsToken) + ` for ` + percentAll(asToken) + `"}`
		}},
		{"token at the end of the excerpt", func(*http.Request) string {
			return strings.Repeat("x", excerptMax-len(hsToken)) + hsToken + "yyy"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
				answer(403, tt.body(r))(w, r)
			})
			s := newSender(t, nil, 0, 0)
			res, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
			require.Error(t, err)
			var se *StatusError
			require.ErrorAs(t, err, &se)
			for _, shown := range []string{res.Excerpt, se.Excerpt, err.Error()} {
				require.Contains(t, shown, "<red")
				for _, secret := range []string{hsToken, asToken} {
					require.NotContains(t, shown, secret[:6], "no part of a token is shown")
				}
			}
		})
	}
}

func TestErrorsDoNotRepeatTheURL(t *testing.T) {
	// A connection error to a port where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	s := newSender(t, nil, 0, 0)
	_, err = s.PutTxn(t.Context(), Endpoint{URL: "http://" + addr + "/" + hsToken, HSToken: hsToken}, 1, []byte(`{"events":[]}`))
	require.Error(t, err)
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr)
	require.NotContains(t, err.Error(), hsToken)
	require.NotContains(t, err.Error(), "/_matrix")
	require.NotErrorIs(t, err, ErrTimeout)
}

func TestInvalidEndpoint(t *testing.T) {
	s := newSender(t, nil, 0, 0)
	for _, base := range []string{
		"",
		"example.org",
		"/relative",
		"ftp://example.org",
		"http://",
		"http://user:" + asToken + "@example.org",
		"http://example.org/?access_token=" + asToken,
		"http://example.org?",
		"http://example.org/#" + asToken,
		"http://example.org:port",
		"http://exa mple.org",
		"http://example.org/\x7f",
	} {
		_, err := s.PutTxn(t.Context(), Endpoint{URL: base, HSToken: hsToken}, 1, []byte(`{}`))
		require.ErrorIs(t, err, ErrInvalidEndpoint, "URL %q", base)
		require.NotContains(t, err.Error(), asToken, "URL %q", base)
		require.NotContains(t, err.Error(), "example.org", "URL %q", base)

		_, _, err = s.Ping(t.Context(), Endpoint{URL: base, HSToken: hsToken}, "p")
		require.ErrorIs(t, err, ErrInvalidEndpoint, "URL %q", base)
	}
}

func TestPutTxnConcurrent(t *testing.T) {
	as := startAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := int64(w*each + i)
				_, err := s.PutTxn(t.Context(), as.endpoint(), id, fmt.Appendf(nil, `{"events":[{"n":%d}]}`, id))
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := as.requests()
	require.Len(t, got, workers*each)
	for _, r := range got {
		id := strings.TrimPrefix(r.Path, "/_matrix/app/v1/transactions/")
		require.Equal(t, `{"events":[{"n":`+id+`}]}`, r.Body)
	}
}

func TestPing(t *testing.T) {
	as := startAS(t, answer(200, `{}`))
	s := newSender(t, nil, 0, 0)
	for i, tt := range []struct{ txnID, wantBody string }{
		{"ping-1", `{"transaction_id":"ping-1"}`},
		{`a"b\é`, `{"transaction_id":"a\"b\\é"}`},
		{"", `{}`},
	} {
		rtt, res, err := s.Ping(t.Context(), as.endpoint(), tt.txnID)
		require.NoError(t, err)
		require.Positive(t, rtt)
		require.Equal(t, Result{Status: 200, Excerpt: "{}"}, res)

		r := as.requests()[i]
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "/_matrix/app/v1/ping", r.Path)
		require.Equal(t, []string{"Bearer " + hsToken}, r.Header["Authorization"])
		require.Equal(t, []string{"application/json"}, r.Header["Content-Type"])
		require.Equal(t, tt.wantBody, r.Body)
		require.Equal(t, int64(len(tt.wantBody)), r.ContentLength)
	}
}

func TestPingFailure(t *testing.T) {
	as := startAS(t, answer(502, `{"errcode":"M_UNKNOWN","error":"`+hsToken+`"}`))
	s := newSender(t, nil, 0, 0)
	_, res, err := s.Ping(t.Context(), as.endpoint(), "p")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 502, res.Status)
	require.Equal(t, `{"errcode":"M_UNKNOWN","error":"<redacted>"}`, res.Excerpt)
	require.Contains(t, err.Error(), "POST ping: AS answered 502")
}

func TestExcerpt(t *testing.T) {
	tests := []struct {
		name, answer, want string
		more               []string
	}{
		{"usual answer", `{}`, `{}`, nil},
		{"empty", ``, ``, nil},
		{"controls and invalid UTF-8", "a\tb\nc\rd\x00e\x1bf\xc3g\u2028h", "a b c d?e?f?g?h", nil},
		{"unicode kept", `{"é":"☃"}`, `{"é":"☃"}`, nil},
		{"cut at a rune boundary", strings.Repeat("a", excerptMax-1) + "é", strings.Repeat("a", excerptMax-1) + "...", nil},
		{"exactly the maximum", strings.Repeat("a", excerptMax), strings.Repeat("a", excerptMax), nil},
		{"redacted", "x" + hsToken + "y" + hsToken, "x<redacted>y<redacted>", nil},
		{"overlapping secrets", "x" + "abcdef" + "y", "x<redacted>y", []string{"abcd", "cdef"}},
		{"adjacent secrets", "x" + hsToken + "abcd" + "y", "x<redacted>y", []string{"abcd"}},
		{"empty secrets ignored", "xy", "xy", []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, excerpt([]byte(tt.answer), hsToken, tt.more))
		})
	}
}

// startSink starts an AS for benchmarks: it reads each request and answers
// {}, recording nothing.
func startSink(b *testing.B) Endpoint {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	}))
	b.Cleanup(srv.Close)
	return Endpoint{URL: srv.URL, HSToken: hsToken, Redact: []string{asToken}}
}

// BenchmarkPutTxn sends 100-event transactions of about 400 bytes an event
// to a loopback AS, one at a time as a single AS's sender does.
func BenchmarkPutTxn(b *testing.B) {
	ep := startSink(b)
	s := newSender(b, nil, 0, 0)
	body, err := Body(Format, benchItems(100))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var id int64
	for b.Loop() {
		id++
		if _, err := s.PutTxn(b.Context(), ep, id, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(id*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkPutTxnParallel sends from several goroutines at once, as the
// senders of several ASes do.
func BenchmarkPutTxnParallel(b *testing.B) {
	ep := startSink(b)
	s := newSender(b, nil, 0, 0)
	body, err := Body(Format, benchItems(100))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var ids atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.PutTxn(context.Background(), ep, ids.Add(1), body); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(ids.Load()*100)/b.Elapsed().Seconds(), "events/s")
}

// TestPutTxnOverUnixSockets: unix:///path URLs reach the application
// service listening on that socket, with the caller's client or without,
// and two sockets never share a connection.
func TestPutTxnOverUnixSockets(t *testing.T) {
	dir := t.TempDir()
	serve := func(name string) (string, *[]string) {
		sock := dir + "/" + name + ".sock"
		ln, err := net.Listen("unix", sock)
		require.NoError(t, err)
		var mu sync.Mutex
		var got []string
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.Method+" "+r.URL.Path+" "+r.Host+" "+r.Header.Get("Authorization"))
			mu.Unlock()
			_, _ = io.WriteString(w, "{}")
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return "unix://" + sock, &got
	}
	urlA, gotA := serve("a")
	urlB, gotB := serve("b")
	for _, client := range []*http.Client{nil, {Timeout: time.Minute}} {
		s := newSender(t, client, 0, 0)
		for i := range 3 {
			_, err := s.PutTxn(t.Context(), Endpoint{URL: urlA, HSToken: hsToken}, int64(i), []byte(`{}`))
			require.NoError(t, err)
			_, err = s.PutTxn(t.Context(), Endpoint{URL: urlB, HSToken: "other"}, int64(10+i), []byte(`{}`))
			require.NoError(t, err)
		}
	}
	require.Len(t, *gotA, 6)
	require.Len(t, *gotB, 6)
	require.Equal(t, "PUT /_matrix/app/v1/transactions/0 localhost Bearer "+hsToken, (*gotA)[0])
	for _, g := range *gotB {
		require.True(t, strings.HasSuffix(g, "Bearer other"), g)
	}

	s := newSender(t, nil, 0, 0)
	_, err := s.PutTxn(t.Context(), Endpoint{URL: "unix://relative.sock", HSToken: hsToken}, 1, []byte(`{}`))
	require.ErrorIs(t, err, ErrInvalidEndpoint)
	_, err = s.PutTxn(t.Context(), Endpoint{URL: "unix://" + dir + "/missing.sock", HSToken: hsToken}, 1, []byte(`{}`))
	require.Error(t, err)
	require.NotContains(t, err.Error(), hsToken)
}
