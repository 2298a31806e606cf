package store

import "context"

// SignalKind says what a Signal reports.
type SignalKind uint8

// The kinds of Signal.
const (
	// SignalWork reports that items were queued for the service: its owner
	// should form its next transaction.
	SignalWork SignalKind = 1
	// SignalServiceUp reports that ServiceUp was published for the
	// service: the application service said it is reachable again, so an
	// owner waiting to retry it should retry at once.
	SignalServiceUp SignalKind = 2
)

// String returns the name of the kind: "work" or "service-up".
func (k SignalKind) String() string {
	switch k {
	case SignalWork:
		return "work"
	case SignalServiceUp:
		return "service-up"
	}
	return "unknown"
}

// Signal is a hint that a Notifier delivers about one service. It carries
// no data: the receiver acts on it by asking the Store (NextTxn, Txns,
// Backlogs), so a signal that comes twice, late, or when there is nothing
// to do costs a query and changes nothing.
type Signal struct {
	// Service is the service ID the signal is about.
	Service string
	// Kind says what happened to it.
	Kind SignalKind
}

// Notifier is an optional interface of a Store that several processes
// share (store/postgres). It carries wake-ups between them, so that an
// item appended in one process reaches the owner of its service in
// another without waiting for a poll, and a ServiceUp received by one
// process cuts short the retry wait of the owner in another. A scheduler
// finds it by type assertion; a Store without it (memory, sqlite) has
// one process, which knows of its own work.
//
// Signals are hints, not a log: a Notifier may coalesce several into one,
// deliver one more than once, or lose one when its connection to the other
// processes breaks (it then reports every service with pending work, so a
// loss costs at most a spurious wake-up). The receiver must still poll
// (Backlogs) now and then, as the scheduler does anyway.
type Notifier interface {
	// Watch calls fn with every signal that reaches this Store until ctx
	// ends or the Store is closed, and then returns ctx.Err() or an error
	// matching ErrClosed. It reports what other Store values did (in
	// other processes, or opened separately in this one): SignalWork when
	// they appended items for a service, SignalServiceUp when they called
	// ServiceUp. The Store does not echo what its own Append and ServiceUp
	// calls did back to its own watchers, since its caller already knows;
	// work it takes in by other paths (such as a transactional outbox that
	// the application writes to) it reports to its own watchers too.
	//
	// fn is called from one goroutine of the Store, one signal at a time,
	// and never after Watch has returned. It must return quickly (set a
	// flag, send on a buffered channel without blocking) and must not call
	// Watch. Several Watch calls may run at once; each gets every signal.
	Watch(ctx context.Context, fn func(Signal)) error

	// ServiceUp publishes SignalServiceUp for service to the watchers of
	// every other Store on the same database, at once or within their poll
	// interval. It changes no state that Store methods report. It returns
	// ErrInvalid for an empty service ID.
	ServiceUp(ctx context.Context, service string) error
}
