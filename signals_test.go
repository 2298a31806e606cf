package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
)

// sharedStore stands in for a Store shared by several processes: a
// store.Notifier whose signals the test sends, as another process would
// cause them, and which records the ServiceUp calls published.
type sharedStore struct {
	store.Store

	mu       sync.Mutex
	watchers []func(store.Signal)
	ups      []string
	watching chan struct{} // closed once a watcher is registered
	once     sync.Once
}

func newSharedStore(inner store.Store) *sharedStore {
	return &sharedStore{Store: inner, watching: make(chan struct{})}
}

func (s *sharedStore) Watch(ctx context.Context, fn func(store.Signal)) error {
	s.mu.Lock()
	s.watchers = append(s.watchers, fn)
	s.mu.Unlock()
	s.once.Do(func() { close(s.watching) })
	<-ctx.Done()
	s.mu.Lock()
	s.watchers = nil
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sharedStore) ServiceUp(_ context.Context, service string) error {
	s.mu.Lock()
	s.ups = append(s.ups, service)
	s.mu.Unlock()
	return nil
}

// signal delivers sig to the watchers, as the Notifier would.
func (s *sharedStore) signal(sig store.Signal) {
	<-s.watching
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fn := range s.watchers {
		fn(sig)
	}
}

func (s *sharedStore) published() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ups...)
}

// appendElsewhere appends an event as another process would: to the
// store, without the scheduler knowing.
func appendElsewhere(t *testing.T, st store.Store, ev Event, services ...string) {
	t.Helper()
	require.NoError(t, st.Append(context.Background(), []store.Entry{{
		Item:     store.Item{Kind: store.KindEvent, Key: ev.ID, Data: ev.Raw},
		Services: services,
	}}))
}

// TestWorkSignalledByAnotherProcessIsSentAtOnce: with the poll an hour
// away, only the signal can wake the owner.
func TestWorkSignalledByAnotherProcessIsSentAtOnce(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	shared := newSharedStore(cfg.Store)
	cfg.Store = shared
	start(t, cfg)
	appendElsewhere(t, shared.Store, event("$1", "!r", "@a_x"), "a")
	shared.signal(store.Signal{Service: "a", Kind: store.SignalWork})
	waitDelivered(t, as, 1)
}

// TestServiceUpCrossesProcesses: a ServiceUp is published to the other
// processes, and one received from them cuts this process's retry wait.
func TestServiceUpCrossesProcesses(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	shared := newSharedStore(cfg.Store)
	cfg.Store = shared
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitDown(t, s, "a")

	s.ServiceUp("a")
	s.ServiceUp("unknown") // not configured here: not published
	waitFor(t, "ServiceUp to be published", func() bool { return len(shared.published()) == 1 })
	assert.Equal(t, []string{"a"}, shared.published())

	as.Up()
	shared.signal(store.Signal{Service: "a", Kind: store.SignalServiceUp})
	waitDelivered(t, as, 1)
}

// TestLeaseReleasedElsewhereIsClaimedOnAWake: while another process holds
// the lease, a wake (such as its signal on release) makes the deliverer
// claim again at once rather than after PollInterval.
func TestLeaseReleasedElsewhereIsClaimedOnAWake(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	shared := newSharedStore(cfg.Store)
	cfg.Store = shared
	epoch, err := shared.Store.Claim(ctx, "a", "another-process", time.Hour)
	require.NoError(t, err)
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitFor(t, "the deliverer to find the lease held", func() bool {
		_, err := shared.Store.Claim(ctx, "a", "probe", time.Hour)
		return err != nil // held: by the other process
	})
	assert.Empty(t, as.Delivered(), "nothing is sent while another process holds the lease")
	require.NoError(t, shared.Store.Release(ctx, "a", epoch))
	shared.signal(store.Signal{Service: "a", Kind: store.SignalWork})
	waitDelivered(t, as, 1)
}

// TestWorkOfAnotherProcessKeepsTheQueuedEstimateAtZero: items that another
// process appended (here, straight into the Store) reach the owner as a
// work signal, not in its count of queued items; it delivers them, and
// that count, on which Config.MaxQueuedPerService relies, stays at zero
// instead of going below it by what the other process queued.
func TestWorkOfAnotherProcessKeepsTheQueuedEstimateAtZero(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	s := start(t, cfg)
	var entries []store.Entry
	for i := range 5 {
		ev := event(fmt.Sprintf("$%d", i), "!r:example.org", "@a_x:example.org")
		entries = append(entries, store.Entry{Item: store.Item{Kind: store.KindEvent, Key: ev.ID, Data: ev.Raw}, Services: []string{"a"}})
	}
	require.NoError(t, cfg.Store.Append(context.Background(), entries))
	d := s.deliverer("a")
	d.workElsewhere()
	waitDelivered(t, as, len(entries))
	require.Zero(t, d.queued.Load())
}
