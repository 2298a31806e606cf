package prometheus_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/metrics/prometheus"
	"github.com/asdeliver/scheduler/store/memory"
)

// scrape fetches the registry's metrics over HTTP, as Prometheus would,
// and returns the value of each sample, keyed as it is written:
// name{labels}.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := make(map[string]float64)
	for _, m := range regexp.MustCompile(`(?m)^(asdeliver_\S+) (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		require.NoError(t, err, m[0])
		out[m[1]] = v
	}
	return out
}

// TestScrapeAfterAnOutage: the application service fails three attempts
// and then accepts; a scrape during the outage shows the service DOWN with
// its transaction stored, and one after it the counters of the attempts
// and the service UP with nothing left.
func TestScrapeAfterAnOutage(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "hs-tok")
	release := make(chan struct{})
	as.Respond(func(r astest.Request) astest.Answer {
		if r.N < 3 {
			return astest.Answer{Status: 503}
		}
		<-release
		return astest.Answer{}
	})
	reg, err := scheduler.ParseRegistration([]byte("id: irc\nurl: " + as.URL() + "\nas_token: as-tok\nhs_token: hs-tok\n" +
		"sender_localpart: ircbot\nnamespaces:\n  users: [{exclusive: true, regex: '@irc_.*'}]\n"))
	require.NoError(t, err)
	st := memory.New()
	defer st.Close()

	c := prometheus.NewCollector()
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{reg},
		Store: st, Observer: c, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond})
	require.NoError(t, err)
	c.Watch(s)
	registry := prom.NewPedanticRegistry()
	require.NoError(t, registry.Register(c))
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}))
	defer srv.Close()

	require.NoError(t, s.Start(ctx))
	defer func() { _ = s.Stop(ctx) }()
	for _, id := range []string{"$1", "$2"} {
		ev, err := scheduler.ParseEvent([]byte(`{"event_id":"` + id + `","room_id":"!r:example.org",` +
			`"sender":"@irc_bob:example.org","type":"m.room.message","content":{}}`))
		require.NoError(t, err)
		require.NoError(t, s.Enqueue(ctx, ev))
	}

	// The fourth attempt hangs until released: the outage, seen from a
	// scrape, after three failures.
	var during map[string]float64
	require.Eventually(t, func() bool {
		during = scrape(t, srv.URL)
		return during[`asdeliver_failed_transactions_total{service="irc"}`] == 3
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 0.0, during[`asdeliver_service_up{service="irc"}`])
	assert.Equal(t, 1.0, during[`asdeliver_service_configured{service="irc"}`])
	assert.Equal(t, 3.0, during[`asdeliver_consecutive_failures{service="irc"}`], "%v", during)
	assert.Equal(t, 1.0, during[`asdeliver_stored_transactions{service="irc"}`])
	assert.Positive(t, during[`asdeliver_oldest_waiting_seconds{service="irc"}`])
	assert.Zero(t, during[`asdeliver_sent_transactions_total{service="irc"}`])
	assert.Equal(t, 3.0, during[`asdeliver_put_duration_seconds_count{service="irc"}`])

	close(release)
	var after map[string]float64
	require.Eventually(t, func() bool {
		after = scrape(t, srv.URL)
		return after[`asdeliver_service_up{service="irc"}`] == 1 && after[`asdeliver_stored_transactions{service="irc"}`] == 0
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 3.0, after[`asdeliver_failed_transactions_total{service="irc"}`])
	assert.GreaterOrEqual(t, after[`asdeliver_sent_transactions_total{service="irc"}`], 1.0)
	assert.Equal(t, 2.0, after[`asdeliver_sent_events_total{service="irc"}`])
	assert.Positive(t, after[`asdeliver_sent_bytes_total{service="irc"}`])
	assert.Zero(t, after[`asdeliver_consecutive_failures{service="irc"}`])
	assert.Zero(t, after[`asdeliver_queued_items{service="irc"}`])
	assert.Zero(t, after[`asdeliver_next_retry_seconds{service="irc"}`])
	assert.Zero(t, after[`asdeliver_dropped_items_total{service="irc"}`])
	assert.Zero(t, after[`asdeliver_scrape_store_error`])
}
