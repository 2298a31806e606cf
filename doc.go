// Package scheduler delivers Matrix events from a homeserver to its
// application services (bridges, bots) reliably: it is the homeserver side
// of the Matrix Application Service API.
//
// A homeserver creates a Scheduler with New, starts it with Start and hands
// it every persistent event with Enqueue; ephemeral events (typing, read
// receipts, presence) with EnqueueEphemeral, to-device messages with
// EnqueueToDevice, and MSC3202 device data with EnqueueDeviceLists and
// EnqueueDeviceKeyCounts, all of which get the same guarantees. Ping checks
// that an application service is reachable (MSC2659). The scheduler
// decides which application services want each event, stores it durably
// before Enqueue returns, batches the events owed to each service into
// transactions, and PUTs them to the service. When a service is down it
// retries with exponential backoff until the service is back.
//
// Guarantees, each covered by tests:
//
//   - At-least-once: every event Enqueue accepted reaches every service that
//     wanted it, across outages of any length and across a crash of the
//     process, once it restarts on the same Store.
//   - In order per service: transactions arrive in ascending ID order, events
//     in enqueue order; a newer transaction is never sent while an older one
//     is undelivered.
//   - Stable transactions: a retried transaction has the same ID and a
//     byte-identical body. IDs are decimal, strictly increasing per service
//     and never repeat, also after a restart.
//   - No orphans: nothing stored is left unsent while its service is UP.
//   - Bounded memory: a backlog of any size lives in the Store.
//   - Full catch-up: after an outage the backlog leaves in full
//     transactions, not one per Enqueue.
//   - Isolation: a dead, slow or hostile service never blocks another, nor
//     Enqueue.
//
// The pipeline has four stages, named after Synapse's appservice scheduler
// they rebuild: the EventSorter decides interest and polls the Store for
// work left by a restart (sorter.go); the EventPool admits Enqueue calls
// and commits them together (eventpool.go); per service, the
// TransactionMaker sends while the service is UP (txnmaker.go) and the
// Recoverer retries while it is DOWN (recoverer.go), exactly one of them
// owning the service at any moment.
package scheduler
