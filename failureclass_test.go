package scheduler

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptedAS answers the n-th request (0-based) as script says, with
// `{}` and 200 once the script runs out.
func scriptedAS(t *testing.T, script func(n int, w http.ResponseWriter) bool) (*httptest.Server, *atomic.Int64) {
	var n, ok atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if script(int(n.Add(1)-1), w) {
			return
		}
		ok.Add(1)
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &ok
}

func scriptedReg(url string) *Registration {
	return &Registration{ID: "a", URL: url, HSToken: "hs", ASToken: "as", SenderLocalpart: "abot",
		Namespaces: Namespaces{Users: []Namespace{{Regex: "@a_.*", Exclusive: true}}}}
}

// TestRetryAfterIsHonouredCappedByRetryMax: a 429 (or 503) with
// Retry-After waits what the AS asked, at most RetryMax, in seconds or as
// an HTTP date; other failures keep backing off meanwhile.
func TestRetryAfterIsHonouredCappedByRetryMax(t *testing.T) {
	srv, delivered := scriptedAS(t, func(n int, w http.ResponseWriter) bool {
		switch n {
		case 0:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		case 1:
			w.WriteHeader(http.StatusInternalServerError) // no Retry-After: the backoff's next step
		case 2:
			w.Header().Set("Retry-After", "86400") // a day: capped
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			w.Header().Set("Date", "Sat, 05 Dec 2026 12:00:00 GMT")
			w.Header().Set("Retry-After", "Sat, 05 Dec 2026 12:01:15 GMT")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			return false
		}
		return true
	})
	cfg := testConfig(t, scriptedReg(srv.URL))
	cfg.RetryInitial, cfg.RetryMax = 2*time.Second, 10*time.Minute
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	s, _ := startWithClock(t, cfg, 2)
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))
	waitFor(t, "the delivery", func() bool { return delivered.Load() == 1 })
	assert.Equal(t, []time.Duration{30 * time.Second, 4 * time.Second, 10 * time.Minute, 75 * time.Second},
		logs.durations(msgWaiting, "backoff"))
}

// TestRefusedCredentialsAreLoggedOncePerOutage: 401 and 403 say the token
// is wrong; that is worth one ERROR per outage, not one per retry.
func TestRefusedCredentialsAreLoggedOncePerOutage(t *testing.T) {
	srv, delivered := scriptedAS(t, func(n int, w http.ResponseWriter) bool {
		switch n {
		case 0, 1, 2: // an outage of three refusals, then a success
			w.WriteHeader(http.StatusUnauthorized)
		case 4, 5: // a second outage
			w.WriteHeader(http.StatusForbidden)
		default:
			return false
		}
		return true
	})
	cfg := testConfig(t, scriptedReg(srv.URL))
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	s, _ := startWithClock(t, cfg, 2)
	ctx := context.Background()
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitFor(t, "the first delivery", func() bool { return delivered.Load() == 1 })
	require.NoError(t, s.Enqueue(ctx, event("$2", "!r", "@a_x")))
	waitFor(t, "the second delivery", func() bool { return delivered.Load() == 2 })
	errorsLogged := 0
	for _, text := range logs.texts() {
		if strings.Contains(text, "refused our credentials (hs_token mismatch?)") {
			errorsLogged++
		}
	}
	assert.Equal(t, 2, errorsLogged, "one ERROR per outage")
	waitFor(t, "the status to show the success", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.LastHTTPStatus == http.StatusOK
	})
}
