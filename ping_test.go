package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

func TestPingSucceedsAndCutsALongBackoffShort(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "hs-secret")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitDown(t, s, "a")
	failed := len(as.Requests())

	as.Up()
	rtt, err := s.Ping(ctx, "a", "ping-1")
	require.NoError(t, err)
	assert.Positive(t, rtt)
	ping := as.Requests()[failed]
	assert.Equal(t, http.MethodPost, ping.Method)
	assert.Equal(t, "/_matrix/app/v1/ping", ping.Path)
	assert.Equal(t, "Bearer hs-secret", ping.Auth)
	assert.Equal(t, "application/json", ping.ContentType)
	assert.JSONEq(t, `{"transaction_id":"ping-1"}`, string(ping.Body))
	assert.Empty(t, ping.Query)

	// The successful ping called ServiceUp: the hour-long wait is cut short.
	waitDelivered(t, as, 1)
	waitFor(t, "service UP", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateUp
	})
}

func TestPingErrors(t *testing.T) {
	ctx := context.Background()
	failing := astest.New(t, "tok-failing")
	failing.FailWith(func(int) int { return http.StatusBadGateway })
	hanging := astest.New(t, "tok-hanging")
	hanging.Hang()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	gone := reg("gone", nil)
	gone.URL = closed
	cfg := testConfig(t, reg("failing", failing), reg("hanging", hanging), gone, reg("nourl", nil))
	cfg.AnswerTimeout = 100 * time.Millisecond
	s := start(t, cfg)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	sentinels := []error{ErrUnknownService, ErrNoURL, ErrTimeout, ErrBadStatus, ErrUnreachable, context.Canceled}
	for _, c := range []struct {
		name    string
		ctx     context.Context
		service string
		want    error
	}{
		{"unknown service", ctx, "nope", ErrUnknownService},
		{"url null", ctx, "nourl", ErrNoURL},
		{"bad status", ctx, "failing", ErrBadStatus},
		{"timeout", ctx, "hanging", ErrTimeout},
		{"connection refused", ctx, "gone", ErrUnreachable},
		{"context canceled", canceled, "failing", context.Canceled},
	} {
		t.Run(c.name, func(t *testing.T) {
			rtt, err := s.Ping(c.ctx, c.service, "p")
			assert.Zero(t, rtt)
			for _, sentinel := range sentinels {
				assert.Equal(t, sentinel == c.want, errors.Is(err, sentinel), "errors.Is(%v, %v)", err, sentinel)
			}
			for _, secret := range []string{"tok-failing", "tok-hanging", "hs_gone", "as_failing"} {
				assert.NotContains(t, err.Error(), secret)
			}
		})
	}

	_, err = s.Ping(ctx, "failing", "p")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusBadGateway, se.Status)
	assert.Contains(t, se.Answer, "failing on purpose")
	assert.Contains(t, err.Error(), "502")
}

func TestLegacyQueryAuth(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "off by default"
		if legacy {
			name = "on"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			as := astest.New(t, "secret/hs+token")
			as.FailWith(func(n int) int {
				if n == 0 {
					return http.StatusInternalServerError
				}
				return 0
			})
			cfg := testConfig(t, reg("a", as, "@a_"))
			cfg.LegacyQueryAuth = legacy
			logs := make(chan string, 100)
			cfg.Logger = slog.New(recordHandler{msgs: logs})
			s := start(t, cfg)
			require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
			waitDelivered(t, as, 1)
			_, err := s.Ping(ctx, "a", "p")
			require.NoError(t, err)

			wantQuery := ""
			if legacy {
				wantQuery = "access_token=secret%2Fhs%2Btoken"
			}
			reqs := as.Requests()
			require.Len(t, reqs, 3) // a failed PUT, its retry, the ping
			for _, r := range reqs {
				assert.Equal(t, wantQuery, r.Query, "%s %s", r.Method, r.Path)
				assert.Equal(t, "Bearer secret/hs+token", r.Auth, "the header is always sent")
			}
			st, err := s.Status(ctx, "a")
			require.NoError(t, err)
			shown := []string{st.LastError, st.LastAnswer}
			for len(logs) > 0 {
				shown = append(shown, <-logs)
			}
			for _, shown := range shown {
				assert.NotContains(t, shown, "secret/hs+token")
				assert.NotContains(t, shown, "secret%2Fhs%2Btoken")
				assert.NotContains(t, shown, "access_token")
			}
		})
	}
}
