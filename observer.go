package scheduler

import (
	"time"

	"github.com/asdeliver/scheduler/store"
)

// Observer is told of every attempt to deliver a transaction, for metrics:
// set Config.Observer. metrics/prometheus provides one that exports
// Prometheus counters and histograms; the gauges (backlogs, states) come
// from Statuses when they are scraped.
//
// Delivered is called from the service's delivery goroutine, after the
// attempt and before the next: it must return quickly (count, observe a
// histogram) and never block, or delivery to that service waits. A panic
// in it is recovered and logged.
type Observer interface {
	Delivered(Delivery)
}

// Delivery describes one attempt to deliver a transaction.
type Delivery struct {
	// ServiceID is the service the transaction was for.
	ServiceID string
	// TxnID is the transaction's ID; an attempt after a failed one may
	// carry the same ID again.
	TxnID int64
	// Events, Ephemeral, ToDevice and DeviceData count the transaction's
	// items by kind: events, ephemeral events, to-device messages, and
	// device-list summaries and key counts (MSC3202).
	Events, Ephemeral, ToDevice, DeviceData int
	// Bytes is the size of the body sent, 0 when nothing was sent.
	Bytes int
	// Duration is how long the PUT took, to the end of the answer.
	Duration time.Duration
	// Status is the HTTP status of the answer, 0 when none came.
	Status int
	// Err is nil when the application service accepted the transaction,
	// else why the attempt failed.
	Err error
}

// newDelivery returns the Delivery of an attempt to send txn to service,
// with its items counted.
func newDelivery(service string, txn *store.Txn) Delivery {
	dl := Delivery{ServiceID: service, TxnID: txn.ID}
	for _, it := range txn.Items {
		switch it.Kind {
		case store.KindEvent:
			dl.Events++
		case store.KindEphemeral:
			dl.Ephemeral++
		case store.KindToDevice:
			dl.ToDevice++
		default:
			dl.DeviceData++
		}
	}
	return dl
}

// observe hands dl to the Observer, if any, recovering a panic in it.
func (d *deliverer) observe(dl Delivery) {
	if d.observer == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("Config.Observer panicked; delivery goes on", "panic", r)
		}
	}()
	d.observer.Delivered(dl)
}
