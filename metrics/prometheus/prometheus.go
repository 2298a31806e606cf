// Package prometheus exports the asdeliver scheduler's metrics to
// Prometheus (github.com/prometheus/client_golang): counters and a
// histogram fed by every delivery attempt (scheduler.Observer), and gauges
// read from Scheduler.Statuses at each scrape. Every metric has one label,
// service: the application service's ID, so their number grows with the
// services configured, never with traffic.
//
//	c := prometheus.NewCollector()
//	cfg.Observer = c
//	s, err := scheduler.New(cfg)
//	c.Watch(s)
//	registry.MustRegister(c)
//
// The metrics, and Synapse's equivalents (synapse/appservice/api.py; the
// Python client adds _total to counters):
//
//	asdeliver_sent_transactions_total      synapse_appservice_api_sent_transactions_total
//	asdeliver_failed_transactions_total    synapse_appservice_api_failed_transactions_total
//	asdeliver_sent_events_total            synapse_appservice_api_sent_events_total
//	asdeliver_sent_ephemeral_total         synapse_appservice_api_sent_ephemeral_total
//	asdeliver_sent_todevice_total          synapse_appservice_api_sent_todevice_total
//	asdeliver_sent_device_data_total       (MSC3202 device lists and key counts; none)
//	asdeliver_sent_bytes_total             (none)
//	asdeliver_put_duration_seconds         (none; a histogram of every attempt)
//	asdeliver_queued_items                 (none) items waiting for a transaction
//	asdeliver_stored_transactions          (none) transactions formed, not yet delivered
//	asdeliver_oldest_waiting_seconds       (none) age of the oldest undelivered item
//	asdeliver_service_up                   (none) 1 UP, 0 DOWN or UNCONFIGURED
//	asdeliver_service_configured           (none) 0 for work left by a removed service
//	asdeliver_consecutive_failures         (none) failed attempts since the last success
//	asdeliver_next_retry_seconds           (none) until the next attempt while DOWN
//	asdeliver_dropped_items_total          (none) see Config.MaxQueuedPerService
//
// As in Synapse, a transaction counts as sent when the application service
// accepted it, and every failed attempt counts as failed: a transaction
// retried three times before it is accepted counts three failures and one
// send. The counters count this process's attempts; with several
// processes on one store, sum them.
package prometheus

import (
	"context"
	"sync"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/asdeliver/scheduler"
)

// namespace prefixes every metric name.
const namespace = "asdeliver"

// scrapeTimeout bounds the read of the store at each scrape.
const scrapeTimeout = 5 * time.Second

// DurationBuckets are the buckets of asdeliver_put_duration_seconds: from
// a millisecond (an AS on the same host) to a minute (AnswerTimeout).
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Collector is a prometheus.Collector of the scheduler's metrics and the
// scheduler.Observer that feeds its counters. Create it with NewCollector,
// set it as Config.Observer, and Watch the Scheduler for the gauges.
type Collector struct {
	sent, failed, events, ephemeral, toDevice, deviceData, bytes *prom.CounterVec
	duration                                                     *prom.HistogramVec

	queued, stored, oldest, up, configured, failures, nextRetry, dropped, scrapeErrors *prom.Desc

	mu    sync.Mutex
	sched *scheduler.Scheduler
}

// NewCollector returns a Collector with every counter at zero and no
// scheduler to read gauges from yet.
func NewCollector() *Collector {
	service := []string{"service"}
	counter := func(name, help string) *prom.CounterVec {
		return prom.NewCounterVec(prom.CounterOpts{Namespace: namespace, Name: name, Help: help}, service)
	}
	gauge := func(name, help string) *prom.Desc {
		return prom.NewDesc(prom.BuildFQName(namespace, "", name), help, service, nil)
	}
	return &Collector{
		sent:       counter("sent_transactions_total", "Transactions the application service accepted."),
		failed:     counter("failed_transactions_total", "Attempts to deliver a transaction that failed."),
		events:     counter("sent_events_total", "Events in accepted transactions."),
		ephemeral:  counter("sent_ephemeral_total", "Ephemeral events (typing, receipts, presence) in accepted transactions."),
		toDevice:   counter("sent_todevice_total", "To-device messages in accepted transactions."),
		deviceData: counter("sent_device_data_total", "MSC3202 device-list summaries and key counts in accepted transactions."),
		bytes:      counter("sent_bytes_total", "Body bytes of accepted transactions."),
		duration: prom.NewHistogramVec(prom.HistogramOpts{Namespace: namespace, Name: "put_duration_seconds",
			Help: "Duration of every transaction PUT, accepted or not, to the end of the answer.", Buckets: DurationBuckets}, service),
		queued:     gauge("queued_items", "Items waiting to be put in a transaction."),
		stored:     gauge("stored_transactions", "Transactions formed and not yet delivered."),
		oldest:     gauge("oldest_waiting_seconds", "Age of the oldest undelivered item; 0 when nothing waits."),
		up:         gauge("service_up", "1 when the service is UP, 0 when DOWN or UNCONFIGURED."),
		configured: gauge("service_configured", "1 for a configured service, 0 for work left by one no longer configured."),
		failures:   gauge("consecutive_failures", "Failed attempts since the last success."),
		nextRetry:  gauge("next_retry_seconds", "Seconds until the next attempt while DOWN; 0 when UP."),
		dropped: prom.NewDesc(prom.BuildFQName(namespace, "", "dropped_items_total"),
			"Items not queued for the service because it was DOWN with a full queue (Config.MaxQueuedPerService).", []string{"service"}, nil),
		scrapeErrors: prom.NewDesc(prom.BuildFQName(namespace, "", "scrape_store_error"),
			"1 when the store could not be read for the gauges at this scrape.", nil, nil),
	}
}

// Watch makes the Collector read the gauges from s at each scrape.
func (c *Collector) Watch(s *scheduler.Scheduler) {
	c.mu.Lock()
	c.sched = s
	c.mu.Unlock()
}

// Delivered counts one delivery attempt: scheduler.Observer.
func (c *Collector) Delivered(d scheduler.Delivery) {
	id := d.ServiceID
	if d.Bytes > 0 {
		c.duration.WithLabelValues(id).Observe(d.Duration.Seconds())
	}
	if d.Err != nil {
		c.failed.WithLabelValues(id).Inc()
		return
	}
	c.sent.WithLabelValues(id).Inc()
	c.events.WithLabelValues(id).Add(float64(d.Events))
	c.ephemeral.WithLabelValues(id).Add(float64(d.Ephemeral))
	c.toDevice.WithLabelValues(id).Add(float64(d.ToDevice))
	c.deviceData.WithLabelValues(id).Add(float64(d.DeviceData))
	c.bytes.WithLabelValues(id).Add(float64(d.Bytes))
}

// Describe sends the descriptions of every metric: prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prom.Desc) {
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
	for _, d := range []*prom.Desc{c.queued, c.stored, c.oldest, c.up, c.configured, c.failures, c.nextRetry, c.dropped, c.scrapeErrors} {
		ch <- d
	}
}

// Collect sends the counters, and the gauges of every service that
// Statuses reports: prometheus.Collector.
func (c *Collector) Collect(ch chan<- prom.Metric) {
	for _, v := range c.vecs() {
		v.Collect(ch)
	}
	c.mu.Lock()
	s := c.sched
	c.mu.Unlock()
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	statuses, err := s.Statuses(ctx)
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prom.MustNewConstMetric(c.scrapeErrors, prom.GaugeValue, failed)
	now := time.Now()
	for _, st := range statuses {
		gauge := func(d *prom.Desc, v float64) { ch <- prom.MustNewConstMetric(d, prom.GaugeValue, v, st.ID) }
		gauge(c.queued, float64(st.QueuedEvents))
		gauge(c.stored, float64(st.StoredTxns))
		gauge(c.oldest, st.OldestWaiting.Seconds())
		gauge(c.up, boolValue(st.State == scheduler.StateUp))
		gauge(c.configured, boolValue(st.State != scheduler.StateUnconfigured))
		gauge(c.failures, float64(st.ConsecutiveFailures))
		retry := 0.0
		if !st.NextRetry.IsZero() {
			retry = max(0, st.NextRetry.Sub(now).Seconds())
		}
		gauge(c.nextRetry, retry)
		ch <- prom.MustNewConstMetric(c.dropped, prom.CounterValue, float64(st.Dropped), st.ID)
	}
}

// vecs returns the metrics the Observer feeds.
func (c *Collector) vecs() []prom.Collector {
	return []prom.Collector{c.sent, c.failed, c.events, c.ephemeral, c.toDevice, c.deviceData, c.bytes, c.duration}
}

// boolValue is 1 for true, 0 for false.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	_ prom.Collector     = (*Collector)(nil)
	_ scheduler.Observer = (*Collector)(nil)
)
