package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// Defaults for the zero fields of Config.
const (
	DefaultPollInterval    = time.Second
	DefaultMaxEventsPerTxn = 100
	DefaultMaxTxnBytes     = 1 << 20
	DefaultRetryInitial    = 2 * time.Second
	DefaultRetryMax        = 512 * time.Second
	DefaultConnectTimeout  = 15 * time.Second
	DefaultAnswerTimeout   = 60 * time.Second
	DefaultMaxPoolEvents   = 10_000
	DefaultMaxPoolBytes    = 64 << 20
	DefaultLeaseTTL        = 30 * time.Second
)

// RoomDirectory is the optional hook through which the scheduler asks the
// homeserver about a room when an application service's namespaces do not
// already decide its interest in an event from the event alone: an AS is
// also interested when one of the room's local aliases matches its aliases
// namespace, or one of the room's local joined members matches its users
// namespace (as Synapse decides).
//
// The same rules decide which services receive the typing notifications
// and read receipts of a room (EnqueueEphemeral), and, with UserRooms,
// presence updates and device-list changes.
//
// Both methods run in the goroutine of the Enqueue method called, at most
// once per room per call, only for services that the event alone did not
// decide, and only when such a service has a namespace of that kind. They
// must be fast (an in-memory cache, not a database scan per call): a slow
// lookup delays every Enqueue, which is how Synapse's delivery once
// stalled. An error fails the call, which stores nothing.
type RoomDirectory interface {
	// LocalAliases returns the room's aliases on this homeserver.
	LocalAliases(ctx context.Context, roomID string) ([]string, error)
	// LocalMembers returns the user IDs of the room's joined members on
	// this homeserver.
	LocalMembers(ctx context.Context, roomID string) ([]string, error)
}

// UserRooms is an optional extension of RoomDirectory: a Config.Rooms value
// that also implements it lets the scheduler decide interest in a user
// through the rooms the user is in, as Synapse does for presence and
// device-list changes. An application service is then also interested in a
// presence update (EnqueueEphemeral) or a device-list change
// (EnqueueDeviceLists) of a user who is joined to a room the service is
// interested in: a room in its rooms namespace, with a local alias in its
// aliases namespace, or with a local member in its users namespace.
// Without it, only the user's own ID decides (the service's users
// namespace, or its own user).
//
// JoinedRooms runs in the goroutine of the Enqueue method, at most once per
// user per call, with the RoomDirectory methods for each room it returns;
// all of them must be fast. An error fails the call, which stores nothing.
type UserRooms interface {
	// JoinedRooms returns the IDs of the rooms this homeserver knows
	// userID (local or remote) to be joined to.
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
}

// Config configures a Scheduler. Zero fields mean the documented defaults.
type Config struct {
	// ServerName is the homeserver's name, as in @sender_localpart:ServerName.
	// Required.
	ServerName string

	// Services are the application services to deliver to. IDs and
	// as_tokens must be unique. A registration with an empty URL (url: null
	// in its file) receives nothing.
	Services []*Registration

	// Store holds every accepted event until its services have it. Required;
	// the caller opens and closes it (sqlite.Open(path) for one process,
	// memory.New() for tests).
	Store store.Store

	// PollInterval is how often the scheduler looks in the Store for work
	// it was not told about: left by a restart or appended by another
	// process. Events enqueued in this process are sent at once, never
	// delayed by it. Defaults to DefaultPollInterval (1 s).
	PollInterval time.Duration

	// MaxEventsPerTxn is the most events one transaction carries. Other
	// content has limits of its own: MaxEphemeralPerTxn,
	// MaxToDevicePerTxn, MaxDeviceListsPerTxn and MaxKeyCountsPerTxn.
	// Defaults to DefaultMaxEventsPerTxn (100).
	MaxEventsPerTxn int

	// MaxTxnBytes bounds the stored bytes of everything one transaction
	// carries; an item larger than it is refused by the Enqueue method.
	// The body can be larger: ephemeral events go under two keys when a
	// service opts in to both names, and one-time key counts always do, so
	// allow up to about twice this for a body. Defaults to
	// DefaultMaxTxnBytes (1 MiB).
	MaxTxnBytes int

	// RetryInitial is the first wait after a failed delivery; each further
	// failure doubles it, up to RetryMax. Defaults to DefaultRetryInitial
	// (2 s).
	RetryInitial time.Duration

	// RetryMax caps the wait between retries. Retries never give up.
	// Defaults to DefaultRetryMax (512 s).
	RetryMax time.Duration

	// RetryJitter randomises each wait by up to this fraction (0.2 means
	// ±20 %), which spreads the retries of many homeservers hitting one AS.
	// Defaults to 0: no jitter.
	RetryJitter float64

	// HTTPClient sends the transactions. The scheduler never follows its
	// redirects and enforces ConnectTimeout and AnswerTimeout on every
	// request whatever the client's own settings. Defaults to a client of
	// the scheduler's own, whose idle connections Stop closes.
	HTTPClient *http.Client

	// ConnectTimeout bounds obtaining a connection to an AS. Defaults to
	// DefaultConnectTimeout (15 s).
	ConnectTimeout time.Duration

	// AnswerTimeout bounds the time from a connection to the end of the
	// AS's answer. Defaults to DefaultAnswerTimeout (60 s).
	AnswerTimeout time.Duration

	// MaxPoolEvents bounds the events accepted by Enqueue and not yet
	// committed to the Store; Enqueue waits for room beyond it, so a Store
	// slower than the producer pushes back. A call with more events than
	// this gets ErrBatchTooLarge. Defaults to DefaultMaxPoolEvents (10,000).
	MaxPoolEvents int

	// MaxPoolBytes bounds the bytes of those events likewise. Defaults to
	// DefaultMaxPoolBytes (64 MiB).
	MaxPoolBytes int

	// MaxQueuedPerService caps the items (events and the rest) queued for
	// one service that is DOWN and not yet in a transaction. Once such a
	// service has that many, the Enqueue methods stop queueing new items
	// for it: they are dropped for that service alone, counted in
	// ServiceStatus.Dropped and logged (a WARN when its queue fills, an
	// INFO when it has room again), while every other service that wants
	// them still gets them and the call succeeds. A service that is UP is
	// never capped: a burst it is working through is not an outage. The
	// count is the scheduler's estimate (exact for this process's calls,
	// refreshed from the Store every PollInterval), so a queue may pass
	// the cap by the calls in flight; and only the process that delivers
	// to the service knows it is DOWN, which is all there is with SQLite.
	//
	// Defaults to 0: no cap, nothing is ever dropped, and a service that
	// stays down grows the Store without bound. With a Store of capped size
	// (sqlite.Options.MaxSize), one dead service's backlog then fills it
	// and every Enqueue fails with ErrFull, also for events only healthy
	// services want: set a cap that lets every service's full queue fit,
	// such as MaxSize / (services × average item size × 2).
	MaxQueuedPerService int

	// Rooms, if set, is asked about a room's local aliases and members; see
	// RoomDirectory. If it also implements UserRooms, it is asked about the
	// rooms of a user too. Defaults to nil: interest is decided from the
	// event alone.
	Rooms RoomDirectory

	// LegacyQueryAuth also sends each application service its hs_token in
	// the URL, as ?access_token=..., besides the Authorization header that
	// is always sent: the legacy authentication of the Application Service
	// API, for application services too old to read the header (Synapse's
	// use_appservice_legacy_authorization). It is insecure: URLs, and so
	// the token, end up in the access logs of the application service and
	// of every proxy in between. The scheduler never logs the URL or the
	// token. Defaults to false.
	LegacyQueryAuth bool

	// LeaseTTL is how long the lease that makes a process the one sender
	// to a service lasts without renewal. The holder renews it every
	// LeaseTTL/5, also during retry waits and PUTs, and stops sending when
	// it cannot renew it in time. With several processes on one Store
	// (store/postgres) it bounds the hand-over after the holder dies
	// without releasing it (kill -9): another process takes over after
	// about LeaseTTL plus PollInterval, so 5 s gives failover within 7 s. A
	// clean Stop releases it at once. Defaults to DefaultLeaseTTL (30 s).
	LeaseTTL time.Duration

	// Observer, if set, is told of every attempt to deliver a transaction
	// (see Observer; metrics/prometheus provides one). Defaults to nil.
	Observer Observer

	// Logger receives the scheduler's logs. Tokens are never logged.
	// Defaults to discarding everything.
	Logger *slog.Logger
}

// withDefaults validates cfg and returns a copy with its zero fields filled.
func (cfg Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if cfg.ServerName == "" {
		return bad("Config.ServerName is empty: set it to the homeserver's name, e.g. \"example.org\"")
	}
	if cfg.Store == nil {
		return bad("Config.Store is nil: pass sqlite.Open(path), or memory.New() for tests")
	}
	durations := []struct {
		name  string
		field *time.Duration
		def   time.Duration
	}{
		{"PollInterval", &cfg.PollInterval, DefaultPollInterval},
		{"RetryInitial", &cfg.RetryInitial, DefaultRetryInitial},
		{"RetryMax", &cfg.RetryMax, DefaultRetryMax},
		{"ConnectTimeout", &cfg.ConnectTimeout, DefaultConnectTimeout},
		{"AnswerTimeout", &cfg.AnswerTimeout, DefaultAnswerTimeout},
		{"LeaseTTL", &cfg.LeaseTTL, DefaultLeaseTTL},
	}
	for _, d := range durations {
		if *d.field < 0 {
			return bad("Config.%s is negative (%v): leave it 0 for the default (%v)", d.name, *d.field, d.def)
		}
		if *d.field == 0 {
			*d.field = d.def
		}
	}
	if cfg.RetryMax < cfg.RetryInitial {
		return bad("Config.RetryMax (%v) is less than Config.RetryInitial (%v)", cfg.RetryMax, cfg.RetryInitial)
	}
	ints := []struct {
		name  string
		field *int
		def   int
	}{
		{"MaxEventsPerTxn", &cfg.MaxEventsPerTxn, DefaultMaxEventsPerTxn},
		{"MaxTxnBytes", &cfg.MaxTxnBytes, DefaultMaxTxnBytes},
		{"MaxPoolEvents", &cfg.MaxPoolEvents, DefaultMaxPoolEvents},
		{"MaxPoolBytes", &cfg.MaxPoolBytes, DefaultMaxPoolBytes},
	}
	for _, n := range ints {
		if *n.field < 0 {
			return bad("Config.%s is negative (%d): leave it 0 for the default (%d)", n.name, *n.field, n.def)
		}
		if *n.field == 0 {
			*n.field = n.def
		}
	}
	if cfg.MaxQueuedPerService < 0 {
		return bad("Config.MaxQueuedPerService is negative (%d): leave it 0 for no cap", cfg.MaxQueuedPerService)
	}
	if cfg.RetryJitter < 0 || cfg.RetryJitter >= 1 {
		return bad("Config.RetryJitter is %v: it must be in [0, 1)", cfg.RetryJitter)
	}
	if cfg.MaxPoolBytes < cfg.MaxTxnBytes {
		return bad("Config.MaxPoolBytes (%d) is less than Config.MaxTxnBytes (%d): an event that fits a transaction could never be admitted", cfg.MaxPoolBytes, cfg.MaxTxnBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkServices(cfg.Services); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// checkServices validates every registration and rejects duplicate IDs and
// as_tokens, naming both sources (never the token).
func checkServices(services []*Registration) error {
	source := func(i int, r *Registration) string {
		if r.Source != "" {
			return r.Source
		}
		return fmt.Sprintf("Config.Services[%d]", i)
	}
	byID := make(map[string]int, len(services))
	byToken := make(map[string]int, len(services))
	for i, r := range services {
		if r == nil {
			return fmt.Errorf("%w: Config.Services[%d] is nil", ErrInvalidConfig, i)
		}
		if err := r.validate(); err != nil {
			return fmt.Errorf("Config.Services[%d]: %w", i, err)
		}
		if j, ok := byID[r.ID]; ok {
			return &RegistrationError{Source: source(i, r), ID: r.ID, Field: "id",
				Reason: fmt.Sprintf("duplicate: %s has the same id; every registration needs its own", source(j, services[j]))}
		}
		byID[r.ID] = i
		if j, ok := byToken[r.ASToken]; ok {
			return &RegistrationError{Source: source(i, r), ID: r.ID, Field: "as_token",
				Reason: fmt.Sprintf("duplicate: %s has the same as_token; every registration needs its own", source(j, services[j]))}
		}
		byToken[r.ASToken] = i
	}
	return nil
}
