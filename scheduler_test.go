package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRequestMethodPathAuthContentTypeAndBody(t *testing.T) {
	as := astest.New(t, "secret-hs-token")
	s := start(t, testConfig(t, reg("bridge", as, "@bridge_.*")))

	ev := event("$one:example.org", "!room:example.org", "@bridge_alice:example.org")
	require.NoError(t, s.Enqueue(context.Background(), ev))
	waitDelivered(t, as, 1)

	reqs := as.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, http.MethodPut, r.Method)
	assert.Regexp(t, `^/_matrix/app/v1/transactions/[0-9]+$`, r.Path)
	assert.Empty(t, r.Query, "no token in the query string")
	assert.Equal(t, "Bearer secret-hs-token", r.Auth)
	assert.Equal(t, "application/json", r.ContentType)
	assert.Equal(t, `{"events":[`+string(ev.Raw)+`]}`, string(r.Body), "body carries the event bytes verbatim")
}

func TestInterestRules(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	r := reg("irc", as, "@irc_.*:example\\.org")
	r.SenderLocalpart = "ircbot"
	r.Namespaces.Rooms = []Namespace{{Regex: "!ircroom.*"}}
	r.Namespaces.Aliases = []Namespace{{Regex: "#irc_.*"}}
	nullURL := reg("nourl", nil, ".*") // url: null wants everything but receives nothing
	cfg := testConfig(t, r, nullURL)
	cfg.Rooms = fakeDirectory{
		aliases: map[string][]string{"!aliased:example.org": {"#irc_freenode:example.org"}},
		members: map[string][]string{"!joined:example.org": {"@someone:example.org", "@irc_bob:example.org"}},
	}
	s := start(t, cfg)

	cases := []struct {
		name   string
		ev     Event
		wanted bool
	}{
		{"sender is the AS's own user", event("$own", "!x:example.org", "@ircbot:example.org"), true},
		{"sender in users namespace", event("$ns", "!x:example.org", "@irc_alice:example.org"), true},
		{"member event state_key in users namespace", member("$member", "!x:example.org", "@mod:example.org", "@irc_carol:example.org"), true},
		{"member event state_key is the AS's user", member("$invite", "!x:example.org", "@mod:example.org", "@ircbot:example.org"), true},
		{"room in rooms namespace", event("$room", "!ircroom1:example.org", "@z:example.org"), true},
		{"room alias in aliases namespace (hook)", event("$alias", "!aliased:example.org", "@z:example.org"), true},
		{"local member in users namespace (hook)", event("$joined", "!joined:example.org", "@z:example.org"), true},
		{"regex anchored at the start", event("$anchored", "!x:example.org", "@xirc_dave:example.org"), false},
		{"state_key of a non-member event ignored", Event{}, false},
		{"unrelated event", event("$unrelated", "!x:example.org", "@z:example.org"), false},
	}
	// A state event whose state_key is in the namespace but which is not a
	// membership event.
	sk := "@irc_erin:example.org"
	cases[8].ev = mustParse(t, `{"event_id":"$topic","room_id":"!x:example.org","sender":"@z:example.org","type":"m.room.topic","state_key":"`+sk+`","content":{}}`)

	var all []Event
	for _, c := range cases {
		all = append(all, c.ev)
	}
	require.NoError(t, s.Enqueue(ctx, all...))
	// A final marker proves that everything before it has been processed.
	require.NoError(t, s.Enqueue(ctx, event("$marker", "!x:example.org", "@irc_marker:example.org")))
	waitFor(t, "marker delivered", func() bool { return as.Deliveries("$marker") == 1 })
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := 0
			if c.wanted {
				want = 1
			}
			assert.Equal(t, want, as.Deliveries(c.ev.ID), c.ev.ID)
		})
	}
	st, err := s.Status(ctx, "nourl")
	assert.ErrorIs(t, err, ErrUnknownService, "an AS with url: null gets nothing stored: %+v", st)
}

func mustParse(t testing.TB, raw string) Event {
	ev, err := ParseEvent([]byte(raw))
	require.NoError(t, err)
	return ev
}

type fakeDirectory struct {
	aliases map[string][]string
	members map[string][]string
	err     error
}

func (d fakeDirectory) LocalAliases(_ context.Context, room string) ([]string, error) {
	return d.aliases[room], d.err
}

func (d fakeDirectory) LocalMembers(_ context.Context, room string) ([]string, error) {
	return d.members[room], d.err
}

func TestRoomDirectoryErrorFailsEnqueueAndStoresNothing(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.Rooms = fakeDirectory{err: errors.New("database is down")}
	s := start(t, cfg)
	err := s.Enqueue(context.Background(), event("$1", "!r", "@a_x"), event("$2", "!r", "@other"))
	require.ErrorContains(t, err, "database is down")
	bl, err := cfg.Store.Backlogs(context.Background())
	require.NoError(t, err)
	assert.Empty(t, bl, "a failed call stores nothing, not even the events that were decided")
}

func TestRetryKeepsTxnIDAndBody(t *testing.T) {
	as := astest.New(t, "tok")
	as.FailWith(func(n int) int {
		if n < 3 {
			return []int{500, 502, 404}[n]
		}
		return 0
	})
	s := start(t, testConfig(t, reg("a", as, "@a_.*")))
	require.NoError(t, s.Enqueue(context.Background(),
		event("$1", "!r", "@a_1"), event("$2", "!r", "@a_2")))
	waitDelivered(t, as, 2)

	reqs := as.Requests()
	require.Len(t, reqs, 4)
	for _, r := range reqs[1:] {
		assert.Equal(t, reqs[0].TxnID, r.TxnID, "same txn ID on every retry")
		assert.Equal(t, string(reqs[0].Body), string(r.Body), "byte-identical body on every retry")
	}
	assert.Equal(t, []int{500, 502, 404, 200}, []int{reqs[0].Status, reqs[1].Status, reqs[2].Status, reqs[3].Status})
}

func TestOrderKeptAcrossOutageWithThreeBursts(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	s := start(t, testConfig(t, reg("a", as, "@a_.*")))
	var want []string
	burst := func(name string, n int) {
		for i := range n {
			ev := event(fmt.Sprintf("$%s-%d", name, i), "!r", "@a_x")
			want = append(want, ev.ID)
			require.NoError(t, s.Enqueue(ctx, ev))
		}
	}
	burst("before", 150)
	waitDelivered(t, as, 150)
	as.Down()
	burst("during", 250)
	waitFor(t, "service DOWN", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateDown
	})
	burst("recovering", 250)
	as.Up()
	waitDelivered(t, as, len(want))
	assert.Equal(t, want, as.Delivered())
	assertIncreasingTxnIDs(t, as)
}

// waitDown waits until the Recoverer owns the service: only then does
// ServiceUp have a wait to cut short.
func waitDown(t *testing.T, s *Scheduler, id string) {
	t.Helper()
	waitFor(t, id+" DOWN", func() bool {
		st, err := s.Status(context.Background(), id)
		return err == nil && st.State == StateDown
	})
}

// assertIncreasingTxnIDs checks that successful deliveries never went back
// to a lower txn ID, and that a new ID was never sent before the previous
// one succeeded.
func assertIncreasingTxnIDs(t *testing.T, as *astest.Server) {
	t.Helper()
	var last int64
	pending := ""
	for _, r := range as.Requests() {
		id, err := strconv.ParseInt(r.TxnID, 10, 64)
		require.NoError(t, err, "txn ID %q is decimal", r.TxnID)
		if pending != "" && r.TxnID != pending {
			t.Fatalf("txn %s sent while txn %s was undelivered", r.TxnID, pending)
		}
		if r.Status != http.StatusOK {
			pending = r.TxnID
			continue
		}
		pending = ""
		require.Greater(t, id, last, "successful txn IDs increase")
		last = id
	}
}

func TestBatchingWhileATransactionHangs(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Hang()
	s := start(t, testConfig(t, reg("a", as, "@a_.*")))
	require.NoError(t, s.Enqueue(ctx, event("$first", "!r", "@a_x")))
	waitArrived(t, as, 1) // the first transaction is in flight and hangs
	const n = 1000
	for i := range n {
		require.NoError(t, s.Enqueue(ctx, event(fmt.Sprintf("$%d", i), "!r", "@a_x")))
	}
	as.Release()
	waitDelivered(t, as, n+1)
	reqs := successes(as)
	for _, r := range reqs {
		assert.LessOrEqual(t, len(r.Txn.Events), 100)
	}
	assert.Len(t, reqs, 1+n/100, "the backlog leaves in full transactions")
}

func TestHungServiceDoesNotDelayAnother(t *testing.T) {
	ctx := context.Background()
	hung := astest.New(t, "tok1")
	hung.Hang()
	fine := astest.New(t, "tok2")
	s := start(t, testConfig(t, reg("hung", hung, "@.*"), reg("fine", fine, "@.*")))
	require.NoError(t, s.Enqueue(ctx, event("$0", "!r", "@x")))
	waitArrived(t, hung, 1)
	for i := range 300 {
		require.NoError(t, s.Enqueue(ctx, event(fmt.Sprintf("$%d", i+1), "!r", "@x")))
	}
	waitDelivered(t, fine, 301)
	assert.Empty(t, hung.Delivered(), "the hung AS is still hanging")
}

func TestServiceUpCutsALongBackoffShort(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial = time.Hour
	cfg.RetryMax = time.Hour
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitFor(t, "service DOWN", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateDown && !st.NextRetry.IsZero()
	})
	st, err := s.Status(ctx, "a")
	require.NoError(t, err)
	assert.Greater(t, time.Until(st.NextRetry), 50*time.Minute, "next retry is an hour away")
	assert.Equal(t, 503, st.LastHTTPStatus)
	assert.Contains(t, st.LastAnswer, "failing on purpose")

	as.Up()
	s.ServiceUp("a")
	waitDelivered(t, as, 1)
	waitFor(t, "service UP", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateUp
	})
	s.ServiceUp("a")       // no-op while UP
	s.ServiceUp("unknown") // no-op for an unknown service
}

func TestBackoffDoublesCapsResetsAndNeverGivesUp(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	failures := 14
	as.FailWith(func(n int) int {
		if n < failures || n == failures+1 {
			return 500
		}
		return 0
	})
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = 0, 0 // the defaults: 2 s doubling to 512 s
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	// The fake clock moves to the deliverer's next timer at once: the test
	// drives time, and reads the waits the Recoverer chose from its log.
	s, _ := startWithClock(t, cfg, 2)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitDelivered(t, as, 1)
	require.NoError(t, s.Enqueue(ctx, event("$2", "!r", "@a_x")))
	waitDelivered(t, as, 2)

	sec := time.Second
	want := []time.Duration{2 * sec, 4 * sec, 8 * sec, 16 * sec, 32 * sec, 64 * sec, 128 * sec, 256 * sec,
		512 * sec, 512 * sec, 512 * sec, 512 * sec, 512 * sec, 512 * sec, // capped, never giving up
		2 * sec} // back to the start after a delivered transaction
	waitFor(t, "the last wait to be logged", func() bool { return len(logs.durations(msgWaiting, "backoff")) >= len(want) })
	assert.Equal(t, want, logs.durations(msgWaiting, "backoff"))
}

func TestRestartOnSameSQLiteFileContinuesTxnIDs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "asdeliver.db")
	as := astest.New(t, "tok")
	run := func(events []Event, wantDelivered int, down bool) {
		st, err := sqlite.Open(path)
		require.NoError(t, err)
		defer func() { require.NoError(t, st.Close()) }()
		cfg := testConfig(t, reg("a", as, "@a_.*"))
		cfg.Store = st
		if down {
			as.Down()
		} else {
			as.Up()
		}
		s, err := New(cfg)
		require.NoError(t, err)
		require.NoError(t, s.Start(ctx))
		require.NoError(t, s.Enqueue(ctx, events...))
		if down {
			waitFor(t, "a failed attempt", func() bool { return as.Stats().Failed > 0 })
		} else {
			waitDelivered(t, as, wantDelivered)
		}
		require.NoError(t, s.Stop(ctx))
	}
	run([]Event{event("$1", "!r", "@a_x")}, 1, false)
	first := successes(as)
	require.Len(t, first, 1)
	// Nothing is pending now: a restart must still not reuse the ID.
	run([]Event{event("$2", "!r", "@a_x")}, 2, false)
	// A run that leaves a stored transaction behind.
	run([]Event{event("$3", "!r", "@a_x")}, 2, true)
	run([]Event{event("$4", "!r", "@a_x")}, 4, false)

	assert.Equal(t, []string{"$1", "$2", "$3", "$4"}, as.Delivered())
	assertIncreasingTxnIDs(t, as)
	ok := successes(as)
	require.Len(t, ok, 4)
	ids := map[string]bool{}
	for _, r := range ok {
		assert.False(t, ids[r.TxnID], "txn ID %s delivered twice", r.TxnID)
		ids[r.TxnID] = true
	}
}

func TestBacklogAfterOutageLeavesInFullTransactions(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	const n = 1050
	for i := range n {
		require.NoError(t, s.Enqueue(ctx, event(fmt.Sprintf("$%d", i), "!r", "@a_x")))
	}
	waitDown(t, s, "a")
	as.Up()
	s.ServiceUp("a")
	waitDelivered(t, as, n)
	var sizes []int
	for _, r := range successes(as) {
		sizes = append(sizes, len(r.Txn.Events))
	}
	// The first transaction was formed while the AS was idle, before the
	// backlog built up; everything after it leaves in full transactions.
	first := sizes[0]
	require.Equal(t, n, sumInts(sizes))
	rest := sizes[1:]
	for i, sz := range rest[:len(rest)-1] {
		assert.Equal(t, 100, sz, "transaction %d after the outage", i+1)
	}
	assert.Len(t, rest, (n-first+99)/100)
}

// TestCatchUpFormsEachTransactionBesideTheLastComplete: after an outage,
// once the stored transactions are resent, the Recoverer forms each next
// transaction while the last one is completed, so that a store merging
// the two calls commits them together: one commit between a 2xx and the
// next PUT.
func TestCatchUpFormsEachTransactionBesideTheLastComplete(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	// Completes and formations linger, and their spans are recorded: a
	// formation made beside a Complete overlaps it by about the linger,
	// one made after it does not overlap it at all.
	const linger = 20 * time.Millisecond
	type span struct{ from, to time.Time }
	var (
		mu                    sync.Mutex
		completes, formations []span
	)
	inner := cfg.Store
	cfg.Store = &storeFunc{
		Store: inner,
		complete: func(ctx context.Context, service string, epoch store.Epoch, id int64) error {
			from := time.Now()
			time.Sleep(linger)
			err := inner.Complete(ctx, service, epoch, id)
			mu.Lock()
			completes = append(completes, span{from, time.Now()})
			mu.Unlock()
			return err
		},
		nextTxn: func(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
			from := time.Now()
			time.Sleep(linger)
			txn, err := inner.NextTxn(ctx, service, epoch, format, lim)
			if txn != nil {
				mu.Lock()
				formations = append(formations, span{from, time.Now()})
				mu.Unlock()
			}
			return txn, err
		},
	}
	s := start(t, cfg)
	const n = 1050
	for i := range n {
		require.NoError(t, s.Enqueue(ctx, event(fmt.Sprintf("$%d", i), "!r", "@a_x")))
	}
	waitDown(t, s, "a")
	mu.Lock()
	formedBefore := len(formations)
	mu.Unlock()
	as.Up()
	s.ServiceUp("a")
	waitDelivered(t, as, n)

	mu.Lock()
	defer mu.Unlock()
	formed := formations[formedBefore:]
	beside := 0
	for _, f := range formed {
		for _, c := range completes {
			if f.from.Before(c.to) && c.from.Before(f.to) {
				beside++
				break
			}
		}
	}
	// The first formation after the resent transaction has no Complete
	// beside it: the resend's Complete ran before the Recoverer knew that
	// nothing more was stored.
	require.GreaterOrEqual(t, len(formed), 9)
	assert.Equal(t, len(formed)-1, beside, "formations beside a Complete, of %d", len(formed))
}

func sumInts(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

func TestSameEventEnqueuedTwiceWhilePendingArrivesOnce(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	ev := event("$dup", "!r", "@a_x")
	require.NoError(t, s.Enqueue(ctx, ev))
	waitDown(t, s, "a")
	require.NoError(t, s.Enqueue(ctx, ev))     // bound in a stored txn
	require.NoError(t, s.Enqueue(ctx, ev, ev)) // and twice in one call
	require.NoError(t, s.Enqueue(ctx, event("$after", "!r", "@a_x")))
	as.Up()
	s.ServiceUp("a")
	waitDelivered(t, as, 2)
	waitFor(t, "queue drained", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
	assert.Equal(t, 1, as.Deliveries("$dup"))
	assert.Equal(t, []string{"$dup", "$after"}, as.Delivered())
}

func TestEnqueueCancelledWhileWaitingForRoomStoresNothing(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.MaxPoolEvents = 2
	gate := make(chan struct{})
	inner := cfg.Store
	cfg.Store = &storeFunc{Store: inner, append: func(ctx context.Context, e []store.Entry) error {
		<-gate // a slow disk
		return inner.Append(ctx, e)
	}}
	s := start(t, cfg)

	firstDone := make(chan error, 1)
	go func() {
		firstDone <- s.Enqueue(context.Background(), event("$a", "!r", "@a_x"), event("$b", "!r", "@a_x"))
	}()
	waitFor(t, "the pool to fill", func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		return s.pool.events == 2
	})
	ctx, cancel := context.WithCancel(context.Background())
	secondDone := make(chan error, 1)
	go func() { secondDone <- s.Enqueue(ctx, event("$c", "!r", "@a_x")) }()
	cancel()
	require.ErrorIs(t, <-secondDone, context.Canceled)
	close(gate)
	require.NoError(t, <-firstDone)
	require.NoError(t, s.Enqueue(context.Background(), event("$d", "!r", "@a_x")))
	waitDelivered(t, as, 3)
	assert.Equal(t, []string{"$a", "$b", "$d"}, as.Delivered(), "the cancelled call stored nothing")
}

func TestFlappingServiceUnderConcurrentProducersLosesNothing(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	as.FailWith(func(int) int {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(100) < 40 {
			return 500
		}
		return 0
	})
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Millisecond, 4*time.Millisecond
	s := start(t, cfg)

	const producers, perProducer = 4, 400
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(p), 7))
			for i := 0; i < perProducer; {
				n := min(1+r.IntN(10), perProducer-i)
				var evs []Event
				for j := range n {
					evs = append(evs, event(fmt.Sprintf("$p%d-%d", p, i+j), "!r", "@a_x"))
				}
				if err := s.Enqueue(ctx, evs...); err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				i += n
			}
		})
	}
	wg.Wait()
	waitDelivered(t, as, producers*perProducer)

	// Per-producer order of first deliveries.
	next := make([]int, producers)
	for _, id := range as.Delivered() {
		var p, i int
		_, err := fmt.Sscanf(id, "$p%d-%d", &p, &i)
		require.NoError(t, err)
		require.Equal(t, next[p], i, "producer %d out of order", p)
		next[p]++
	}
	assertIncreasingTxnIDs(t, as)
	// Nothing orphaned: the store holds nothing for the AS once it is UP.
	waitFor(t, "store empty and service UP", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateUp && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
}

// TestNoOrphanWhenEventsLandAsTheOwnerFindsNothing targets guarantee 4: an
// event committed in the instant after the owner found nothing to send
// (while UP, and while the Recoverer decides to hand back) must still be
// sent at once, without help from the poller.
func TestNoOrphanWhenEventsLandAsTheOwnerFindsNothing(t *testing.T) {
	for _, c := range []struct {
		store      string
		recovering bool
	}{{"memory", false}, {"memory", true}, {"sqlite", false}, {"sqlite", true}} {
		t.Run(fmt.Sprintf("store=%s/recovering=%v", c.store, c.recovering), func(t *testing.T) {
			recovering := c.recovering
			ctx := context.Background()
			as := astest.New(t, "tok")
			cfg := testConfig(t, reg("a", as, "@a_.*"))
			if c.store == "sqlite" {
				// Its Append is ordered before it commits (OrderedAppender):
				// the owner is woken then, not after the commit.
				st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
				require.NoError(t, err)
				t.Cleanup(func() { _ = st.Close() })
				cfg.Store = st
			}
			cfg.PollInterval = time.Hour // the poller must not be the rescue
			var s *Scheduler
			var injected atomic.Int32
			inner := cfg.Store
			cfg.Store = &storeFunc{Store: inner, nextTxn: func(ctx context.Context, svc string, ep store.Epoch, f int, l store.Limits) (*store.Txn, error) {
				txn, err := inner.NextTxn(ctx, svc, ep, f, l)
				if txn == nil && err == nil && injected.Load() < 20 {
					// Commit a new event in the window between "nothing
					// queued" and the owner's next step.
					n := injected.Add(1)
					if err := s.Enqueue(ctx, event(fmt.Sprintf("$late%d", n), "!r", "@a_x")); err != nil {
						t.Errorf("enqueue: %v", err)
					}
				}
				return txn, err
			}}
			if recovering {
				as.FailWith(func(n int) int {
					if n%2 == 0 {
						return 500 // every other attempt fails: the Recoverer hands back often
					}
					return 0
				})
			}
			var err error
			s, err = New(cfg)
			require.NoError(t, err)
			require.NoError(t, s.Start(ctx))
			defer func() { require.NoError(t, s.Stop(ctx)) }()
			require.NoError(t, s.Enqueue(ctx, event("$first", "!r", "@a_x")))
			waitFor(t, "every late event delivered", func() bool {
				return injected.Load() >= 20 && len(as.Delivered()) == 21
			})
		})
	}
}

func TestLifecycleErrors(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	s, err := New(testConfig(t, reg("a", as, "@a_.*")))
	require.NoError(t, err)
	assert.ErrorIs(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")), ErrNotStarted)
	require.NoError(t, s.Start(ctx))
	assert.ErrorIs(t, s.Start(ctx), ErrAlreadyStarted)
	require.NoError(t, s.Stop(ctx))
	assert.ErrorIs(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")), ErrStopped)
	assert.ErrorIs(t, s.Start(ctx), ErrStopped)
	assert.NoError(t, s.Stop(ctx), "a second Stop is a no-op")
}

func TestEnqueueSizeLimits(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.MaxPoolEvents = 3
	cfg.MaxTxnBytes = 300
	cfg.MaxPoolBytes = 600
	s := start(t, cfg)

	err := s.Enqueue(ctx, event("$1", "!r", "@a_x"), event("$2", "!r", "@a_x"), event("$3", "!r", "@a_x"), event("$4", "!r", "@a_x"))
	assert.ErrorIs(t, err, ErrBatchTooLarge)

	big := event("$big", "!r", "@a_x")
	big.Raw = []byte(`{"event_id":"$big","room_id":"!r","sender":"@a_x","type":"m.room.message","content":{"body":"` + string(make([]byte, 0)) + fmt.Sprintf("%0400d", 0) + `"}}`)
	err = s.Enqueue(ctx, event("$ok", "!r", "@a_x"), big)
	var tooLarge *EventTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, 1, tooLarge.Index)
	assert.Equal(t, "$big", tooLarge.EventID)

	// None of the refused calls stored anything.
	require.NoError(t, s.Enqueue(ctx, event("$last", "!r", "@a_x")))
	waitDelivered(t, as, 1)
	assert.Equal(t, []string{"$last"}, as.Delivered())
}

func TestStopWithHungPUTReturnsContextErrorAndLeavesNoGoroutine(t *testing.T) {
	as := astest.New(t, "tok")
	as.Hang()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	before := goleak.IgnoreCurrent()
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))
	waitArrived(t, as, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.Stop(ctx), context.DeadlineExceeded)
	// Every goroutine has ended when Stop returns.
	goleak.VerifyNone(t, before)

	// Nothing was lost: the next scheduler on the same store delivers it.
	as.Release()
	start(t, cfg)
	waitDelivered(t, as, 1)
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitFor(t, "DOWN", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.State == StateDown
	})
	require.NoError(t, s.Enqueue(ctx, event("$2", "!r", "@a_x"), event("$3", "!r", "@a_x")))
	st, err := s.Status(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, 1, st.StoredTxns)
	assert.Equal(t, 2, st.QueuedEvents)
	assert.Greater(t, st.OldestWaiting, time.Duration(0))
	assert.Equal(t, 1, st.ConsecutiveFailures)
	assert.Contains(t, st.LastError, "503")
	assert.NotContains(t, st.LastError, "tok")
	assert.True(t, st.LastSuccess.IsZero())

	_, err = s.Status(ctx, "nope")
	assert.ErrorIs(t, err, ErrUnknownService)
}

func TestWorkForUnconfiguredServiceIsKeptVisibleAndPurgeable(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("gone", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x"), event("$2", "!r", "@a_x")))
	waitFor(t, "a failed attempt", func() bool { return as.Stats().Failed > 0 })
	require.NoError(t, s.Stop(ctx))

	other := astest.New(t, "tok2")
	cfg.Services = []*Registration{reg("other", other, "@b_.*")}
	s2 := start(t, cfg)
	st, err := s2.Status(ctx, "gone")
	require.NoError(t, err)
	assert.Equal(t, StateUnconfigured, st.State)
	assert.Equal(t, 1, st.StoredTxns, "both events wait in the transaction that failed")
	assert.Greater(t, st.OldestWaiting, time.Duration(0))
	assert.Error(t, s2.Purge(ctx, "other"), "a configured service cannot be purged")
	require.NoError(t, s2.Purge(ctx, "gone"))
	_, err = s2.Status(ctx, "gone")
	assert.ErrorIs(t, err, ErrUnknownService)
}

func TestStopFinishesBegunCommitsAndRefusesWaitingCalls(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.MaxPoolEvents = 1
	gate := make(chan struct{})
	inner := cfg.Store
	cfg.Store = &storeFunc{Store: inner, append: func(ctx context.Context, e []store.Entry) error {
		<-gate // the commit has begun and the disk is slow
		return inner.Append(ctx, e)
	}}
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))

	admitted := make(chan error, 1)
	go func() { admitted <- s.Enqueue(context.Background(), event("$begun", "!r", "@a_x")) }()
	waitFor(t, "the first call admitted", func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		return s.pool.events == 1
	})
	waiting := make(chan error, 1)
	go func() { waiting <- s.Enqueue(context.Background(), event("$waiting", "!r", "@a_x")) }()

	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(context.Background()) }()
	require.ErrorIs(t, <-waiting, ErrStopped, "a call still waiting for room is refused")
	close(gate)
	require.NoError(t, <-admitted, "a begun commit finishes and reports its real outcome")
	require.NoError(t, <-stopped)

	// The begun call is durable: the next scheduler delivers it.
	cfg.Store = inner
	start(t, cfg)
	waitDelivered(t, as, 1)
	assert.Equal(t, []string{"$begun"}, as.Delivered())
}

// recordHandler is a slog.Handler that hands every record's message to a
// channel.
type recordHandler struct{ msgs chan string }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	select {
	case h.msgs <- msg:
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestStoredTransactionWhoseItemsChangedIsNotResent(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	logs := make(chan string, 100)
	cfg.Logger = slog.New(recordHandler{msgs: logs})
	var corrupt atomic.Bool
	inner := cfg.Store
	cfg.Store = &storeFunc{Store: inner, txns: func(ctx context.Context, svc string, limit int) ([]store.Txn, error) {
		txns, err := inner.Txns(ctx, svc, limit)
		if corrupt.Load() {
			for i := range txns {
				for j := range txns[i].Items {
					it := &txns[i].Items[j]
					it.Data = append([]byte(nil), it.Data...)
					it.Data[len(it.Data)-2] = ' ' // what a bad disk might do
				}
			}
		}
		return txns, err
	}}
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))
	waitDown(t, s, "a")
	corrupt.Store(true)
	failed := as.Stats().Failed
	as.Up()
	s.ServiceUp("a")
	waitFor(t, "the hash check to refuse the transaction", func() bool {
		select {
		case m := <-logs:
			return strings.Contains(m, "fails its hash check")
		default:
			return false
		}
	})
	assert.Equal(t, failed, len(as.Requests()), "the altered transaction was not sent")
}

// TestTransactionFormedAheadIsSentAfterTheOneThatFailed covers the
// TransactionMaker forming the next transaction during a PUT: when that
// PUT fails, both stay stored and leave oldest first, nothing lost.
func TestTransactionFormedAheadIsSentAfterTheOneThatFailed(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Hang()
	s := start(t, testConfig(t, reg("a", as, "@a_.*")))
	want := []string{"$first"}
	require.NoError(t, s.Enqueue(ctx, event("$first", "!r", "@a_x")))
	waitArrived(t, as, 1) // the first transaction hangs while full batches queue up
	for c := range 3 {
		var evs []Event
		for i := range 100 {
			ev := event(fmt.Sprintf("$%d-%d", c, i), "!r", "@a_x")
			evs = append(evs, ev)
			want = append(want, ev.ID)
		}
		require.NoError(t, s.Enqueue(ctx, evs...))
	}
	as.FailWith(func(n int) int {
		if n == 1 { // the first full batch, sent while the next one is formed
			return http.StatusInternalServerError
		}
		return 0
	})
	as.Release()
	waitDelivered(t, as, len(want))
	assert.Equal(t, want, as.Delivered())
	assertIncreasingTxnIDs(t, as)
	waitFor(t, "store empty", func() bool {
		st, err := s.Status(ctx, "a")
		return err == nil && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
}
