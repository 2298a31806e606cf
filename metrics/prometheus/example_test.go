package prometheus_test

import (
	"log"
	"net/http"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/metrics/prometheus"
	"github.com/asdeliver/scheduler/store/memory"
)

// The homeserver's registry gets the scheduler's metrics: the Collector is
// both the Observer that counts deliveries and the source of the gauges.
func ExampleNewCollector() {
	c := prometheus.NewCollector()
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Store: memory.New(), Observer: c})
	if err != nil {
		log.Fatal(err)
	}
	c.Watch(s)
	prom.MustRegister(c) // or the homeserver's own registry
	http.Handle("/metrics", promhttp.Handler())
}
