package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// space is what a store occupies: its database pages and its files.
type space struct {
	pages, free int64 // page_count and freelist_count
	file, wal   int64 // bytes on disk of the database and of its -wal file
}

func (sp space) String() string {
	return fmt.Sprintf("page_count=%d freelist_count=%d file=%s wal=%s", sp.pages, sp.free, mib(sp.file), mib(sp.wal))
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// spaceOf measures s, whose file is at path.
func spaceOf(t testing.TB, s *Store, path string) space {
	t.Helper()
	var sp space
	require.NoError(t, s.db.QueryRow("PRAGMA page_count").Scan(&sp.pages))
	require.NoError(t, s.db.QueryRow("PRAGMA freelist_count").Scan(&sp.free))
	sp.file = sizeOf(t, path)
	sp.wal = sizeOf(t, path+"-wal")
	return sp
}

// settle waits until the writer has given back what it owes: it compacts
// between batches, after the calls that freed the pages have returned.
func settle(t testing.TB, s *Store) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.w.mu.Lock()
		defer s.w.mu.Unlock()
		return s.w.idle
	}, 30*time.Second, time.Millisecond, "the writer never became idle")
}

// sizeOf returns the size of the file at path, 0 if there is none.
func sizeOf(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	require.NoError(t, err)
	return fi.Size()
}

// eventData returns about 400 bytes of event JSON for event n.
func eventData(n int) []byte {
	head := fmt.Sprintf(`{"event_id":"$event-%d:example.org","room_id":"!room-%d:example.org","sender":"@user-%d:example.org","type":"m.room.message","origin_server_ts":%d,"content":{"msgtype":"m.text","body":"`,
		n, n%97, n%1013, 1700000000000+int64(n))
	body := strings.Repeat(fmt.Sprintf("message %d ", n), 40)
	return []byte(head + body[:400-len(head)-3] + `"}}`)
}

// appendEvents appends events first..first+n-1 for services, in calls of
// batch events.
func appendEvents(t testing.TB, s *Store, first, n, batch int, services ...string) {
	t.Helper()
	entries := make([]store.Entry, 0, batch)
	for i := first; i < first+n; i++ {
		entries = append(entries, store.Entry{
			Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$event-%d:example.org", i), Data: eventData(i)},
			Services: services,
		})
		if len(entries) == batch || i == first+n-1 {
			require.NoError(t, s.Append(context.Background(), entries))
			entries = entries[:0]
		}
	}
}

// drainer delivers the backlogs of services as the scheduler would:
// NextTxn and Complete, one transaction per service in turn.
type drainer struct {
	s      *Store
	epochs map[string]store.Epoch
	lim    store.Limits
}

func newDrainer(t testing.TB, s *Store, services ...string) *drainer {
	t.Helper()
	d := &drainer{s: s, epochs: make(map[string]store.Epoch), lim: store.Limits{MaxItems: 100, MaxBytes: 1 << 20}}
	for _, svc := range services {
		e, err := s.Claim(context.Background(), svc, "drainer", time.Hour)
		require.NoError(t, err)
		d.epochs[svc] = e
	}
	return d
}

// round sends one transaction per service; it returns the items sent.
func (d *drainer) round(t testing.TB) int {
	t.Helper()
	ctx := context.Background()
	sent := 0
	for svc, e := range d.epochs {
		txn, err := d.s.NextTxn(ctx, svc, e, 1, d.lim)
		require.NoError(t, err)
		if txn == nil {
			continue
		}
		require.NoError(t, d.s.Complete(ctx, svc, e, txn.ID))
		sent += len(txn.Items)
	}
	return sent
}

// drain sends until nothing is left, calling each after every round.
func (d *drainer) drain(t testing.TB, each func()) int {
	t.Helper()
	total := 0
	for {
		n := d.round(t)
		if n == 0 {
			return total
		}
		total += n
		if each != nil {
			each()
		}
	}
}

// spaceOptions are the options of the tests of space: the synchronous mode
// changes how often SQLite syncs, not what it writes, and NORMAL keeps
// these tests of thousands of commits fast.
var spaceOptions = Options{Synchronous: SynchronousNormal}

// TestDrainedBacklogGivesItsSpaceBack enqueues 50,000 events of ~400 bytes
// for two services, drains them, and checks that the database and its
// write-ahead log come back to about their size before the backlog.
func TestDrainedBacklogGivesItsSpaceBack(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, spaceOptions)
	threshold := s.vacuumThresholdPages()
	before := spaceOf(t, s, path)

	appendEvents(t, s, 0, 50_000, 1000, "a", "b")
	peak := spaceOf(t, s, path)
	maxWAL := peak.wal
	drained := newDrainer(t, s, "a", "b").drain(t, func() {
		maxWAL = max(maxWAL, sizeOf(t, path+"-wal"))
	})
	require.Equal(t, 100_000, drained)
	settle(t, s)
	after := spaceOf(t, s, path)
	t.Logf("before:  %v", before)
	t.Logf("backlog: %v", peak)
	t.Logf("drained: %v (largest -wal during the drain: %s)", after, mib(maxWAL))

	require.Greater(t, peak.pages, 5000+before.pages, "the backlog should have grown the database")
	require.Less(t, after.free, threshold, "free pages beyond the threshold must have been given back")
	require.LessOrEqual(t, after.pages, before.pages+threshold, "the database must be back to about its size before the backlog")
	require.LessOrEqual(t, after.file, (before.pages+2*threshold)*s.pageSize, "the file must have shrunk on disk")
	require.LessOrEqual(t, maxWAL, int64(journalSizeLimit), "the -wal file must stay bounded")
	require.LessOrEqual(t, after.wal, int64(journalSizeLimit))
}

// TestRepeatedOutagesDoNotGrowTheFile runs 20 outages: a backlog builds
// while nothing is delivered, then drains while new events keep arriving.
// The file after each drain must not grow from one outage to the next.
func TestRepeatedOutagesDoNotGrowTheFile(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, spaceOptions)
	threshold := s.vacuumThresholdPages()
	d := newDrainer(t, s, "a", "b")
	next := 0
	var sizes []space
	for cycle := range 20 {
		// Outages of different lengths: 2,000 to 8,000 events.
		n := 2000 + 2000*(cycle%4)
		appendEvents(t, s, next, n, 500, "a", "b")
		next += n
		peak := spaceOf(t, s, path)
		// The service is back: it drains the backlog while traffic goes on
		// (20 events per round, for as many rounds as the backlog has
		// hundreds of events), until the last event is delivered.
		for rounds := 0; ; rounds++ {
			if rounds < n/100 {
				appendEvents(t, s, next, 20, 20, "a", "b")
				next += 20
			}
			if d.round(t) == 0 {
				break
			}
		}
		settle(t, s)
		sp := spaceOf(t, s, path)
		t.Logf("cycle %2d: %5d events backlog: %v; drained: %v", cycle+1, n, peak, sp)
		sizes = append(sizes, sp)
	}
	// After a drain the database keeps less than the vacuum threshold of
	// free pages, and the file on disk is at most one more threshold larger
	// (a checkpoint cuts it once the difference reaches the threshold): a
	// bound that does not depend on the cycle.
	first := sizes[0]
	for i, sp := range sizes {
		require.LessOrEqual(t, sp.pages, first.pages+threshold, "cycle %d: the database grew", i+1)
		require.LessOrEqual(t, sp.file, (first.pages+2*threshold)*s.pageSize, "cycle %d: the file grew", i+1)
		require.LessOrEqual(t, sp.wal, int64(journalSizeLimit), "cycle %d: the -wal file", i+1)
		// Compared with the last outage of the same length, the files on
		// disk, log included, have not grown.
		if i >= 4 {
			prev := sizes[i-4]
			require.LessOrEqual(t, sp.file+sp.wal, prev.file+prev.wal+threshold*s.pageSize,
				"cycle %d: the files grew since cycle %d", i+1, i-3)
		}
	}
}

func TestPurgeGivesItsSpaceBack(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, spaceOptions)
	threshold := s.vacuumThresholdPages()
	before := spaceOf(t, s, path)
	appendEvents(t, s, 0, 20_000, 1000, "gone")
	e, err := s.Claim(t.Context(), "gone", "operator", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Purge(t.Context(), "gone", e))
	settle(t, s)
	after := spaceOf(t, s, path)
	t.Logf("before: %v; purged: %v", before, after)
	require.Less(t, after.free, threshold)
	require.LessOrEqual(t, after.pages, before.pages+threshold)
	require.LessOrEqual(t, after.file+after.wal, (after.pages+threshold)*s.pageSize, "the file and its log must have shrunk")
}

// foreignDB opens the store's file as another program would, with no busy
// timeout, so that a lock held by the store shows at once.
func foreignDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driverName, "file:"+path+"?_busy_timeout=0")
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

// TestNoReadTransactionHeldWhileATxnIsInFlight checks that between calls,
// and in particular while a formed transaction is being sent, the store
// holds no read transaction that would keep a checkpoint from completing.
func TestNoReadTransactionHeldWhileATxnIsInFlight(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, Options{})
	ctx := t.Context()
	appendEvents(t, s, 0, 2000, 500, "a", "b")
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 100, MaxBytes: 1 << 20})
	require.NoError(t, err)
	_, err = s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	_, err = s.Backlogs(ctx)
	require.NoError(t, err)
	require.Positive(t, sizeOf(t, path+"-wal"))

	// The transaction is "in flight": a checkpoint by another connection
	// must copy the whole log and empty it.
	var busy, logFrames, copied int
	require.NoError(t, foreignDB(t, path).QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &copied))
	require.Equal(t, 0, busy, "a read transaction of the store blocked the checkpoint")
	require.Equal(t, int64(0), sizeOf(t, path+"-wal"))

	require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
}

// TestCheckpointDoesNotWaitForAnotherReader drains a backlog while another
// program holds a read transaction open on the file: the store's own
// checkpoints must not wait for it (the busy timeout here is a minute), and
// once it ends the next drain shrinks the file.
func TestCheckpointDoesNotWaitForAnotherReader(t *testing.T) {
	path := dbPath(t)
	opts := spaceOptions
	opts.BusyTimeout = time.Minute
	s := openStore(t, path, opts)
	appendEvents(t, s, 0, 20_000, 1000, "a")

	reader, err := foreignDB(t, path).Begin()
	require.NoError(t, err)
	var n int
	require.NoError(t, reader.QueryRow("SELECT sum(n) FROM batches").Scan(&n))
	require.Equal(t, 20_000, n)

	start := time.Now()
	d := newDrainer(t, s, "a")
	require.Equal(t, 20_000, d.drain(t, nil))
	require.Less(t, time.Since(start), 30*time.Second, "a checkpoint waited for the reader")
	// The reader still sees its snapshot.
	require.NoError(t, reader.QueryRow("SELECT sum(n) FROM batches").Scan(&n))
	require.Equal(t, 20_000, n)
	require.NoError(t, reader.Rollback())

	threshold := s.vacuumThresholdPages()
	appendEvents(t, s, 20_000, 20_000, 1000, "a")
	require.Equal(t, 20_000, d.drain(t, nil))
	settle(t, s)
	sp := spaceOf(t, s, path)
	require.LessOrEqual(t, sp.file, (sp.pages+threshold)*s.pageSize, "the file must shrink once the reader is gone: %v", sp)
}

func TestMaxSizeSetsMaxPageCount(t *testing.T) {
	s := openStore(t, dbPath(t), Options{MaxSize: 3 << 20})
	require.Equal(t, int64(3<<20)/s.pageSize, pragma[int64](t, s, "max_page_count"))
	require.Equal(t, int64(3<<20)/s.pageSize*15/16, s.appendMaxPages, "appends stop 1/16 short of the cap")

	big := openStore(t, dbPath(t), Options{MaxSize: 1 << 30})
	require.Equal(t, int64(1<<30-1<<20)/big.pageSize, big.appendMaxPages, "the reserve is at most 1 MiB")

	free := newStore(t)
	require.Zero(t, free.appendMaxPages)
}

func TestMaxSizeRejectsBadValues(t *testing.T) {
	for _, size := range []int64{-1, 1, MinMaxSize - 1} {
		_, err := OpenWithOptions(dbPath(t), Options{MaxSize: size})
		require.ErrorContains(t, err, "Options.MaxSize", "MaxSize %d", size)
	}
}

// fill appends batches of 100 events for services until Append fails, and
// returns the number of events stored and the error.
func fill(t *testing.T, s *Store, first int, services ...string) (int, error) {
	t.Helper()
	for n := first; ; n += 100 {
		var entries []store.Entry
		for i := n; i < n+100; i++ {
			entries = append(entries, store.Entry{
				Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$event-%d:example.org", i), Data: eventData(i)},
				Services: services,
			})
		}
		if err := s.Append(t.Context(), entries); err != nil {
			return n - first, err
		}
		require.Less(t, n, first+1_000_000, "Append never failed")
	}
}

// queuedCount returns the items queued or in stored transactions of svc.
func queuedCount(t *testing.T, s *Store, svc string) int {
	t.Helper()
	bl, err := s.Backlogs(t.Context())
	require.NoError(t, err)
	n := 0
	for _, b := range bl {
		if b.Service == svc {
			n += b.Queued
		}
	}
	txns, err := s.Txns(t.Context(), svc, 0)
	require.NoError(t, err)
	for _, txn := range txns {
		n += len(txn.Items)
	}
	return n
}

// TestAppendAtMaxSizeFailsWithErrFullAndStoresNothing fills a store to its
// cap, then checks that the backlog still drains and that delivering it
// makes room for new events.
func TestAppendAtMaxSizeFailsWithErrFullAndStoresNothing(t *testing.T) {
	path := dbPath(t)
	s := openStore(t, path, Options{MaxSize: 2 << 20})
	ctx := t.Context()

	stored, err := fill(t, s, 0, "a")
	require.ErrorIs(t, err, ErrFull)
	require.Positive(t, stored)
	t.Logf("%d events stored under a 2 MiB cap: %v", stored, spaceOf(t, s, path))
	require.Equal(t, stored, count(t, s, "items"), "the failed call stored nothing")
	require.Equal(t, stored, queuedCount(t, s, "a"))
	require.LessOrEqual(t, pragma[int64](t, s, "page_count")*s.pageSize, int64(2<<20))

	// Full, the store still forms transactions: deliveries need no room
	// from appends.
	d := newDrainer(t, s, "a")
	e := d.epochs["a"]
	var txns []*store.Txn
	for range 50 {
		txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 2, MaxBytes: 1 << 20})
		require.NoError(t, err)
		txns = append(txns, txn)
	}
	_, err = fill(t, s, stored, "a")
	require.ErrorIs(t, err, ErrFull, "forming transactions frees nothing")

	// Delivering frees room: the next Append fits.
	for _, txn := range txns {
		require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
	}
	more, err := fill(t, s, stored+100, "a")
	require.ErrorIs(t, err, ErrFull)
	require.Positive(t, more)

	// Drain everything: the whole cap is available again.
	require.Equal(t, stored-100+more, d.drain(t, nil))
	again, err := fill(t, s, 1_000_000, "a")
	require.ErrorIs(t, err, ErrFull)
	require.InDelta(t, stored, again, float64(stored)/10, "the drained store holds as much as the first time")
}

// TestAppendLargerThanMaxSizeFailsWithErrFull checks the other way to the
// cap: one call larger than the whole cap, let past Append's own check,
// stops at SQLite's max_page_count (SQLITE_FULL) in the middle of its
// writes. That must match ErrFull too, undo the call, and leave the store
// working, with the calls that shared its transaction stored.
func TestAppendLargerThanMaxSizeFailsWithErrFull(t *testing.T) {
	s := openStore(t, dbPath(t), Options{MaxSize: MinMaxSize})
	require.ErrorIs(t, s.Append(t.Context(), []store.Entry{{
		Item:     store.Item{Kind: store.KindEvent, Key: "$big", Data: make([]byte, MinMaxSize)},
		Services: []string{"a"},
	}}), ErrFull, "refused by Append's own check")
	s.appendMaxPages = 0 // SQLite's cap alone
	var entries []store.Entry
	for i := range 5000 {
		entries = append(entries, store.Entry{
			Item:     store.Item{Kind: store.KindEvent, Key: fmt.Sprintf("$%d", i), Data: eventData(i)},
			Services: []string{"a", "b"},
		})
	}
	// Another call shares the failed call's transaction: it runs again.
	release := blockWriter(t, s)
	wait := calls(t, s, 0,
		func() error { return s.Append(t.Context(), []store.Entry{entry("$small", "x", "c")}) },
		func() error { return s.Append(t.Context(), entries) })
	release()
	errs := wait()
	require.NoError(t, errs[0])
	err := errs[1]
	require.ErrorIs(t, err, ErrFull)
	require.ErrorContains(t, err, "database or disk is full", "SQLite's own error")
	require.Equal(t, 1, count(t, s, "items"), "only the other call's item")
	require.Equal(t, 1, count(t, s, "queue"))
	require.NoError(t, s.Append(t.Context(), append(entries[:10], entry("$small", "x", "c"))), "the store works after the failed call")
	require.Equal(t, 11, count(t, s, "items"), "$small is still pending for c")

	// What the writer keeps of the file went with the rollback, calls that
	// ran in the undone transaction included: it matches the file.
	fresh, err := loadMemory(t.Context(), s.db, s.keySeed)
	require.NoError(t, err)
	require.Equal(t, fresh.nextSeq, s.w.mem.nextSeq, "the undone calls' seqs are given again")
	require.Equal(t, len(fresh.keys.svcs), len(s.w.mem.keys.svcs))
	for svc, keys := range fresh.keys.svcs {
		require.Equal(t, keys.n, s.w.mem.keys.svcs[svc].n, "pending keys of %s", svc)
	}
	e, err := s.Claim(t.Context(), "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(t.Context(), "a", e, 1, lots)
	require.NoError(t, err)
	require.Len(t, txn.Items, 10)
	for i, it := range txn.Items {
		require.Equal(t, entries[i].Key, it.Key)
		require.Equal(t, entries[i].Data, it.Data)
	}
}

// TestReopenWithLargerMaxSizeAcceptsMore is the operator's way out of a
// full store whose services cannot drain it: a larger cap.
func TestReopenWithLargerMaxSizeAcceptsMore(t *testing.T) {
	path := dbPath(t)
	s, err := OpenWithOptions(path, Options{MaxSize: MinMaxSize})
	require.NoError(t, err)
	stored, err := fill(t, s, 0, "a")
	require.ErrorIs(t, err, ErrFull)
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{MaxSize: 2 * MinMaxSize})
	more, err := fill(t, s, stored, "a")
	require.ErrorIs(t, err, ErrFull)
	require.Positive(t, more)
	require.Equal(t, stored+more, count(t, s, "items"))
}

// bigEnv, set to 1, runs TestMillionEventBacklogSize.
const bigEnv = "ASDELIVER_BIG"

// TestMillionEventBacklogSize measures the database before, at the top of,
// and after draining a backlog of 1,000,000 events of ~400 bytes for one
// service, with the default options. It takes about a minute; run it with
// ASDELIVER_BIG=1 go test -run MillionEvent -v ./store/sqlite.
func TestMillionEventBacklogSize(t *testing.T) {
	if os.Getenv(bigEnv) != "1" {
		t.Skip("set " + bigEnv + "=1 to run")
	}
	path := dbPath(t)
	s := openStore(t, path, Options{})
	before := spaceOf(t, s, path)
	start := time.Now()
	appendEvents(t, s, 0, 1_000_000, 1000, "a")
	peak := spaceOf(t, s, path)
	appended := time.Since(start)

	start = time.Now()
	maxWAL := peak.wal
	rounds := 0
	d := newDrainer(t, s, "a")
	require.Equal(t, 1_000_000, d.drain(t, func() {
		if rounds++; rounds%100 == 0 {
			maxWAL = max(maxWAL, sizeOf(t, path+"-wal"))
		}
	}))
	drained := time.Since(start)
	settle(t, s)
	after := spaceOf(t, s, path)
	t.Logf("before:  %v", before)
	t.Logf("backlog: %v (appended in %v)", peak, appended.Round(time.Millisecond))
	t.Logf("drained: %v (in %v; largest -wal seen: %s)", after, drained.Round(time.Millisecond), mib(maxWAL))
	threshold := s.vacuumThresholdPages()
	require.LessOrEqual(t, after.pages, before.pages+threshold)
}

// TestMaxSizeHoldsOnANewConnection opens a connection the way the
// writer's pool opens one again after an error: it gets the cap of
// Options.MaxSize, set once Open knew the page size, like the first.
func TestMaxSizeHoldsOnANewConnection(t *testing.T) {
	const maxSize = 3 << 20
	s := openStore(t, dbPath(t), Options{MaxSize: maxSize})
	db := sql.OpenDB(driverConnector{s.db.Driver(), dsn(s.path, "immediate")})
	defer db.Close()
	var pages int64
	require.NoError(t, db.QueryRow("PRAGMA max_page_count").Scan(&pages))
	require.Equal(t, maxSize/s.pageSize, pages)
}

// driverConnector opens connections of drv, as database/sql does.
type driverConnector struct {
	drv  driver.Driver
	name string
}

func (c driverConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.name) }
func (c driverConnector) Driver() driver.Driver                        { return c.drv }
