package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t)
	})
}

func TestStoreReopen(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		s, err := Open(filepath.Join(dir, "asdeliver.db"))
		require.NoError(t, err)
		return s
	})
}

// dbPath returns the path of a database file in a fresh directory.
func dbPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "asdeliver.db")
}

// openStore opens the store at path and closes it when t ends.
func openStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := OpenWithOptions(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// newStore opens a store in a fresh directory.
func newStore(t testing.TB) *Store {
	return openStore(t, dbPath(t), Options{})
}

func entry(key, data string, services ...string) store.Entry {
	return store.Entry{
		Item:     store.Item{Kind: store.KindEvent, Key: key, Data: []byte(data)},
		Services: services,
	}
}

var lots = store.Limits{MaxItems: 1 << 20, MaxBytes: 1 << 30}

// count returns the number of rows of table, or for "items" the number of
// items stored in batches.
func count(t *testing.T, s *Store, table string) int {
	t.Helper()
	query := "SELECT count(*) FROM " + table
	if table == "items" {
		query = "SELECT coalesce(sum(n), 0) FROM batches"
	}
	var n int
	require.NoError(t, s.db.QueryRow(query).Scan(&n))
	return n
}

// pragma returns the value of a pragma on the store's connection.
func pragma[T any](t *testing.T, s *Store, name string) T {
	t.Helper()
	var v T
	require.NoError(t, s.db.QueryRow("PRAGMA "+name).Scan(&v))
	return v
}

func TestOpenAppliesPragmas(t *testing.T) {
	s := newStore(t)
	require.Equal(t, "wal", pragma[string](t, s, "journal_mode"))
	require.Equal(t, 2, pragma[int](t, s, "auto_vacuum"), "auto_vacuum should be INCREMENTAL (2)")
	// Durable commits by default: the syncer syncs the log after each
	// commit, so SQLite itself runs with NORMAL.
	require.NotNil(t, s.sync, "SynchronousFull should be the default")
	require.Equal(t, 1, pragma[int](t, s, "synchronous"))
	require.Equal(t, 5000, pragma[int](t, s, "busy_timeout"))
	require.Equal(t, 2, pragma[int](t, s, "temp_store"), "temp_store should be MEMORY (2)")
	require.Equal(t, journalSizeLimit, pragma[int](t, s, "journal_size_limit"))
	require.Equal(t, schemaVersion, pragma[int](t, s, "user_version"))
	require.Equal(t, applicationID, pragma[int](t, s, "application_id"))
}

func TestOpenWithOptionsAppliesSynchronousAndBusyTimeout(t *testing.T) {
	path := dbPath(t)
	s, err := OpenWithOptions(path, Options{Synchronous: SynchronousNormal, BusyTimeout: 1500 * time.Millisecond})
	require.NoError(t, err)
	require.Nil(t, s.sync, "SynchronousNormal should not sync after each commit")
	require.Equal(t, 1, pragma[int](t, s, "synchronous"), "synchronous should be NORMAL (1)")
	require.Equal(t, 1500, pragma[int](t, s, "busy_timeout"))
	require.NoError(t, s.Close())

	// The option is per open, not stored in the file.
	s = openStore(t, path, Options{})
	require.NotNil(t, s.sync)
	// auto_vacuum was set before the first table and stays.
	require.Equal(t, 2, pragma[int](t, s, "auto_vacuum"))
}

func TestOpenWithOptionsRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"unknown synchronous":  {Synchronous: 7},
		"negative busytimeout": {BusyTimeout: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := OpenWithOptions(dbPath(t), opts)
			require.Error(t, err)
		})
	}
	_, err := Open("")
	require.Error(t, err)
}

func TestOpenTwiceInOneProcessFailsWithErrLocked(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)

	_, err = Open(path)
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), "database file is in use by another scheduler: "+path)

	// The same file by another name is the same lock.
	rel, err := filepath.Rel(mustGetwd(t), path)
	require.NoError(t, err)
	_, err = Open(rel)
	require.ErrorIs(t, err, ErrLocked)

	// The failed opens did not disturb the first.
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "x", "a")}))
	require.NoError(t, s.Close())

	s2, err := Open(path)
	require.NoError(t, err, "Close must release the lock")
	require.NoError(t, s2.Close())
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	require.NoError(t, err)
	return wd
}

// lockHelperEnv, when set, makes TestLockHelperProcess act as the other
// process of TestOpenLockedAcrossProcesses: "hold:<path>" opens the store
// and holds it until its stdin closes; "try:<path>" tries to open it.
const lockHelperEnv = "ASDELIVER_SQLITE_LOCK_HELPER"

func TestLockHelperProcess(t *testing.T) {
	arg := os.Getenv(lockHelperEnv)
	if arg == "" {
		t.Skip("run as a child process by TestOpenLockedAcrossProcesses")
	}
	mode, path, _ := strings.Cut(arg, ":")
	s, err := Open(path)
	switch {
	case mode == "try" && errors.Is(err, ErrLocked):
		fmt.Println("result: locked")
		return
	case err != nil:
		fmt.Println("result: error:", err)
		return
	case mode == "try":
		fmt.Println("result: opened")
	case mode == "hold":
		fmt.Println("result: holding")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	if err := s.Close(); err != nil {
		fmt.Println("close:", err)
	}
}

// helper starts this test binary as TestLockHelperProcess in mode on path
// and returns its "result: " line, its stdin and a function that waits for
// it to end.
func helper(t *testing.T, mode, path string) (result string, stdin io.WriteCloser, wait func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+mode+":"+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var once sync.Once
	wait = func() {
		once.Do(func() {
			_ = stdin.Close()
			_, _ = io.Copy(io.Discard, stdout)
			require.NoError(t, cmd.Wait())
		})
	}
	t.Cleanup(wait)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), "result: "); ok {
			return r, stdin, wait
		}
	}
	t.Fatalf("helper process (%s) ended without a result: %v", mode, sc.Err())
	return "", nil, nil
}

func TestOpenLockedAcrossProcesses(t *testing.T) {
	t.Run("ChildHoldsParentFails", func(t *testing.T) {
		path := dbPath(t)
		result, _, wait := helper(t, "hold", path)
		require.Equal(t, "holding", result)

		_, err := Open(path)
		require.ErrorIs(t, err, ErrLocked)

		wait() // the child closes the store and exits
		s, err := Open(path)
		require.NoError(t, err)
		require.NoError(t, s.Close())
	})
	t.Run("ParentHoldsChildFails", func(t *testing.T) {
		path := dbPath(t)
		s, err := Open(path)
		require.NoError(t, err)
		result, _, wait := helper(t, "try", path)
		require.Equal(t, "locked", result)
		wait()

		require.NoError(t, s.Close())
		result, _, wait = helper(t, "try", path)
		require.Equal(t, "opened", result)
		wait()
	})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	raw, err := sql.Open(driverName, path)
	require.NoError(t, err)
	_, err = raw.Exec("PRAGMA user_version = 99")
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	_, err = Open(path)
	require.ErrorIs(t, err, ErrSchemaTooNew)
	require.Contains(t, err.Error(), "99")
	require.Contains(t, err.Error(), fmt.Sprintf("up to %d", schemaVersion))

	// The failed open released the lock.
	_, err = Open(path)
	require.ErrorIs(t, err, ErrSchemaTooNew)
}

func TestOpenRefusesForeignDatabase(t *testing.T) {
	path := dbPath(t)
	raw, err := sql.Open(driverName, path)
	require.NoError(t, err)
	_, err = raw.Exec("CREATE TABLE events (id TEXT)")
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	_, err = Open(path)
	require.ErrorContains(t, err, "not an asdeliver store")
}

func TestOpenMigratesAndKeepsData(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "one", "a")}))
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{})
	e, err := s.Claim(t.Context(), "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(t.Context(), "a", e, 1, lots)
	require.NoError(t, err)
	require.NotNil(t, txn)
	require.Equal(t, "one", string(txn.Items[0].Data))
}

func TestOpenReturnsFreePagesToTheFileSystem(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	ctx := t.Context()
	// Less than the vacuum threshold, which the store keeps for reuse while
	// it runs.
	big := strings.Repeat("x", 8<<10)
	var entries []store.Entry
	for i := range 64 {
		entries = append(entries, entry(fmt.Sprintf("$%d", i), big, "a"))
	}
	require.NoError(t, s.Append(ctx, entries))
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Purge(ctx, "a", e))
	require.Greater(t, pragma[int](t, s, "freelist_count"), 100)
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{})
	require.Equal(t, 0, pragma[int](t, s, "freelist_count"))
}

func TestCloseIsIdempotentAndLaterCallsFailWithErrClosed(t *testing.T) {
	s, err := Open(dbPath(t))
	require.NoError(t, err)
	e, err := s.Claim(t.Context(), "a", "o", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())

	ctx := t.Context()
	_, errNext := s.NextTxn(ctx, "a", e, 1, lots)
	_, errTxns := s.Txns(ctx, "a", 0)
	_, errBacklogs := s.Backlogs(ctx)
	_, errClaim := s.Claim(ctx, "a", "o", time.Hour)
	for name, err := range map[string]error{
		"Append":   s.Append(ctx, []store.Entry{entry("$1", "x", "a")}),
		"Claim":    errClaim,
		"Release":  s.Release(ctx, "a", e),
		"NextTxn":  errNext,
		"Txns":     errTxns,
		"Complete": s.Complete(ctx, "a", e, 1),
		"Backlogs": errBacklogs,
		"Purge":    s.Purge(ctx, "a", e),
	} {
		require.ErrorIs(t, err, store.ErrClosed, name)
	}
}

func TestCanceledContextChangesNothing(t *testing.T) {
	s := newStore(t)
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "x", "a")}))
	e, err := s.Claim(t.Context(), "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(t.Context(), "a", e, 1, store.Limits{MaxItems: 1, MaxBytes: 10})
	require.NoError(t, err)
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$2", "y", "a")}))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, errNext := s.NextTxn(ctx, "a", e, 1, lots)
	_, errTxns := s.Txns(ctx, "a", 0)
	_, errBacklogs := s.Backlogs(ctx)
	_, errClaim := s.Claim(ctx, "a", "p", time.Hour)
	for name, err := range map[string]error{
		"Append":   s.Append(ctx, []store.Entry{entry("$3", "z", "a")}),
		"Claim":    errClaim,
		"Release":  s.Release(ctx, "a", e),
		"NextTxn":  errNext,
		"Txns":     errTxns,
		"Complete": s.Complete(ctx, "a", e, txn.ID),
		"Backlogs": errBacklogs,
		"Purge":    s.Purge(ctx, "a", e),
	} {
		require.ErrorIs(t, err, context.Canceled, name)
	}

	bl, err := s.Backlogs(t.Context())
	require.NoError(t, err)
	require.Len(t, bl, 1)
	require.Equal(t, 1, bl[0].Txns)
	require.Equal(t, 1, bl[0].Queued)
	e2, err := s.Claim(t.Context(), "a", "o", time.Hour)
	require.NoError(t, err)
	require.Equal(t, e, e2, "the lease must still be o's")
}

func TestInvalidArgumentsFailWithErrInvalid(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	_, errClaim1 := s.Claim(ctx, "", "o", time.Hour)
	_, errClaim2 := s.Claim(ctx, "a", "", time.Hour)
	_, errClaim3 := s.Claim(ctx, "a", "o", 0)
	_, errNext1 := s.NextTxn(ctx, "", e, 1, lots)
	_, errNext2 := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 0, MaxBytes: 1})
	_, errNext3 := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 1, MaxBytes: 0})
	_, errTxns := s.Txns(ctx, "", 0)
	for name, err := range map[string]error{
		"Append no services": s.Append(ctx, []store.Entry{entry("$1", "x")}),
		"Append no data":     s.Append(ctx, []store.Entry{entry("$1", "", "a")}),
		"Append empty svc":   s.Append(ctx, []store.Entry{entry("$1", "x", "a", "")}),
		"Claim no service":   errClaim1,
		"Claim no owner":     errClaim2,
		"Claim zero ttl":     errClaim3,
		"Release":            s.Release(ctx, "", e),
		"NextTxn no service": errNext1,
		"NextTxn MaxItems":   errNext2,
		"NextTxn MaxBytes":   errNext3,
		"Txns":               errTxns,
		"Complete":           s.Complete(ctx, "", e, 1),
		"Purge":              s.Purge(ctx, "", e),
	} {
		require.ErrorIs(t, err, store.ErrInvalid, name)
	}
	require.Equal(t, 0, count(t, s, "items"))
}

func TestItemBytesStoredOnceAndDeletedWithLastService(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "shared", "a", "b", "c")}))
	require.Equal(t, 1, count(t, s, "items"))
	require.Equal(t, 3, count(t, s, "queue"))

	for i, svc := range []string{"b", "a", "c"} {
		e, err := s.Claim(ctx, svc, "o", time.Hour)
		require.NoError(t, err)
		txn, err := s.NextTxn(ctx, svc, e, 1, lots)
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, svc, e, txn.ID))
		want := 1
		if i == 2 {
			want = 0
		}
		require.Equal(t, want, count(t, s, "items"), "after %s completed", svc)
	}
	require.Equal(t, 0, count(t, s, "queue"))
	require.Equal(t, 0, count(t, s, "txns"))
}

func TestAppendDoesNotStoreItemNobodyWants(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "first", "a", "b")}))
	// Pending for both: the item must not be stored again.
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "again", "b", "a"), entry("$2", "new", "a")}))
	require.Equal(t, 2, count(t, s, "items"))
	// Pending for a only: stored for c.
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "for c", "a", "c")}))
	require.Equal(t, 3, count(t, s, "items"))

	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Len(t, bl, 3)
	for i, want := range []struct {
		svc    string
		queued int
	}{{"a", 2}, {"b", 1}, {"c", 1}} {
		require.Equal(t, want.svc, bl[i].Service)
		require.Equal(t, want.queued, bl[i].Queued, want.svc)
	}
}

// TestAppendLargeBatch crosses every batch size of the multi-row inserts,
// with keys repeated within the call and already pending.
func TestAppendLargeBatch(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	const n = 1000
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$7", "early", "a")}))
	var entries []store.Entry
	for i := range n {
		svcs := []string{"a"}
		if i%3 == 0 {
			svcs = append(svcs, "b", "a") // a listed twice
		}
		entries = append(entries, entry(fmt.Sprintf("$%d", i%(n-5)), fmt.Sprintf("data %d", i), svcs...))
	}
	require.NoError(t, s.Append(ctx, entries))

	ea, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	eb, err := s.Claim(ctx, "b", "o", time.Hour)
	require.NoError(t, err)

	var got []string
	for {
		txn, err := s.NextTxn(ctx, "a", ea, 1, store.Limits{MaxItems: 100, MaxBytes: 1 << 20})
		require.NoError(t, err)
		if txn == nil {
			break
		}
		for _, it := range txn.Items {
			got = append(got, string(it.Data))
		}
		require.NoError(t, s.Complete(ctx, "a", ea, txn.ID))
	}
	require.Len(t, got, n-5, "keys $0..$4 repeat; $7 was pending")
	require.Equal(t, "early", got[0])
	require.Equal(t, "data 0", got[1])
	require.Equal(t, "data 994", got[len(got)-1])

	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Len(t, bl, 1)
	require.Equal(t, "b", bl[0].Service)
	// b: the 332 multiples of 3 below 995, and $1 and $4 from i = 996 and
	// 999, whose first entries were not for b.
	require.Equal(t, 334, bl[0].Queued)
	require.NoError(t, s.Purge(ctx, "b", eb))
	require.Equal(t, 0, count(t, s, "items"))
}

func TestFirstTxnIDIsTimeFloorAndIDsSurviveReopenWhenIdle(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	ctx := t.Context()
	before := time.Now().UnixMicro()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "x", "a")}))
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)
	require.GreaterOrEqual(t, txn.ID, before)
	require.NoError(t, s.Complete(ctx, "a", e, txn.ID))

	// Nothing pending, and the clock goes back: the next ID still follows.
	require.NoError(t, s.Close())
	s = openStore(t, path, Options{})
	s.now = func() time.Time { return time.Unix(1, 0) }
	e, err = s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$2", "y", "a")}))
	txn2, err := s.NextTxn(ctx, "a", e, 1, lots)
	require.NoError(t, err)
	require.Equal(t, txn.ID+1, txn2.ID)
}

func TestLeaseExpiryUsesStoreClock(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }

	e1, err := s.Claim(ctx, "a", "one", time.Minute)
	require.NoError(t, err)
	_, err = s.Claim(ctx, "a", "two", time.Minute)
	require.ErrorIs(t, err, store.ErrLeaseHeld)

	now = now.Add(59 * time.Second)
	again, err := s.Claim(ctx, "a", "one", time.Minute) // extends to +119s
	require.NoError(t, err)
	require.Equal(t, e1, again)
	now = now.Add(59 * time.Second)
	_, err = s.Claim(ctx, "a", "two", time.Minute)
	require.ErrorIs(t, err, store.ErrLeaseHeld)

	// Expired, but nobody claimed since: the old epoch still works.
	now = now.Add(2 * time.Second)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "x", "a")}))
	txn, err := s.NextTxn(ctx, "a", e1, 1, lots)
	require.NoError(t, err)
	require.NotNil(t, txn)

	e2, err := s.Claim(ctx, "a", "two", time.Minute)
	require.NoError(t, err)
	require.Greater(t, e2, e1)
	require.ErrorIs(t, s.Complete(ctx, "a", e1, txn.ID), store.ErrStaleEpoch)
	require.ErrorIs(t, s.Release(ctx, "a", e1), store.ErrStaleEpoch)
	require.NoError(t, s.Complete(ctx, "a", e2, txn.ID))

	require.NoError(t, s.Release(ctx, "a", e2))
	require.ErrorIs(t, s.Release(ctx, "a", e2), store.ErrStaleEpoch)
	_, err = s.NextTxn(ctx, "a", e2, 1, lots)
	require.ErrorIs(t, err, store.ErrStaleEpoch)
	e3, err := s.Claim(ctx, "a", "one", time.Minute)
	require.NoError(t, err)
	require.Greater(t, e3, e2)

	// A huge ttl does not overflow into the past.
	_, err = s.Claim(ctx, "b", "one", time.Duration(1<<63-1))
	require.NoError(t, err)
	_, err = s.Claim(ctx, "b", "two", time.Minute)
	require.ErrorIs(t, err, store.ErrLeaseHeld)
}

func TestTxnsReturnsItemsOfEachTxnWhenServicesInterleave(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	ea, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	eb, err := s.Claim(ctx, "b", "o", time.Hour)
	require.NoError(t, err)
	var entries []store.Entry
	for i := range 9 {
		svcs := []string{"a"}
		if i%2 == 1 {
			svcs = []string{"b", "a"}
		}
		if i%4 == 0 {
			svcs = []string{"b"}
		}
		entries = append(entries, entry(fmt.Sprintf("$%d", i), fmt.Sprint(i), svcs...))
	}
	require.NoError(t, s.Append(ctx, entries))
	lim := store.Limits{MaxItems: 2, MaxBytes: 100}
	var formed []store.Txn
	for {
		txn, err := s.NextTxn(ctx, "a", ea, 1, lim)
		require.NoError(t, err)
		if txn == nil {
			break
		}
		formed = append(formed, *txn)
	}
	tb, err := s.NextTxn(ctx, "b", eb, 1, lots)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "a", ea, formed[1].ID))
	formed = append(formed[:1], formed[2:]...)

	got, err := s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	require.Len(t, got, len(formed))
	for i := range got {
		require.Equal(t, formed[i].ID, got[i].ID)
		require.Equal(t, formed[i].Items, got[i].Items)
		require.Equal(t, formed[i].Hash, got[i].Hash)
		require.True(t, formed[i].Created.Equal(got[i].Created))
	}
	gotB, err := s.Txns(ctx, "b", 0)
	require.NoError(t, err)
	require.Len(t, gotB, 1)
	require.Equal(t, tb.Items, gotB[0].Items)
}

func TestBacklogsOldestIsFirstPendingItem(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	now := time.Unix(5000, 0)
	s.now = func() time.Time { return now }
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "x", "a")}))
	now = now.Add(time.Second)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$2", "y", "a", "b")}))
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	_, err = s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 1, MaxBytes: 10})
	require.NoError(t, err)

	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, []store.Backlog{
		{Service: "a", Txns: 1, Queued: 1, Oldest: time.Unix(5000, 0)},
		{Service: "b", Txns: 0, Queued: 1, Oldest: time.Unix(5001, 0)},
	}, bl)
}

func TestConcurrentUse(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	const writers, per = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				if err := s.Append(ctx, []store.Entry{entry(fmt.Sprintf("$%d-%d", w, i), "x", "a")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := 0
	for seen < writers*per {
		txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 7, MaxBytes: 1 << 20})
		require.NoError(t, err)
		if txn == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		seen += len(txn.Items)
		require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
	}
	wg.Wait()
	require.Equal(t, writers*per, seen)
	require.Equal(t, 0, count(t, s, "items"))
}

// A process that dies holding leases must not lock its services out of the
// next process on the same file until the leases expire.
func TestOpenFreesLeasesOfAnEarlierProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leases.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.Claim(ctx, "svc", "dead-process", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // closed without Release, as a crash leaves it
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	epoch, err := s.Claim(ctx, "svc", "new-process", time.Hour)
	if err != nil {
		t.Fatalf("claim after reopen: %v", err)
	}
	if epoch <= old {
		t.Fatalf("epoch after reopen is %d, want more than %d", epoch, old)
	}
	if _, err := s.NextTxn(ctx, "svc", old, 1, store.Limits{MaxItems: 1, MaxBytes: 1}); !errors.Is(err, store.ErrStaleEpoch) {
		t.Fatalf("NextTxn with the dead process's epoch: got %v, want ErrStaleEpoch", err)
	}
}

func TestOpenThroughASymlinkSharesTheFileAndItsLock(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.db")
	link := filepath.Join(dir, "link.db")
	require.NoError(t, os.Symlink(real, link))

	s := openStore(t, link, Options{})
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "one", "a")}))
	_, err := Open(real)
	require.ErrorIs(t, err, ErrLocked, "the file's two names share one lock")
	require.NoError(t, s.Close())

	s = openStore(t, real, Options{})
	bl, err := s.Backlogs(t.Context())
	require.NoError(t, err)
	require.Len(t, bl, 1, "what was appended through the link is in the file")
}

// TestMigrationFromVersion1KeepsEveryPendingItem writes a file as schema
// version 1 left it (a transaction bound for "a", an item shared by "a"
// and "b", keyed and keyless items queued) and checks that version 2 reads
// it back exactly, still deduplicates its keys, and deletes each item with
// its last service.
func TestMigrationFromVersion1KeepsEveryPendingItem(t *testing.T) {
	path := dbPath(t)
	raw := createVersion1(t, path)
	items := []store.Item{
		{Seq: 1, Kind: store.KindEvent, Key: "$1", Data: []byte(`{"n":1}`)},
		{Seq: 2, Kind: store.KindEvent, Key: "$2", Data: []byte(`{"n":2}`)},
		{Seq: 3, Kind: store.KindEphemeral, Key: "$3", Data: []byte(`{"n":3}`)},
		{Seq: 4, Kind: store.KindToDevice, Data: []byte(`{"n":4}`)},
	}
	hash := store.HashItems(items[:2])
	for _, it := range items {
		_, err := raw.Exec(`INSERT INTO items (seq, kind, key, data, created) VALUES (?, ?, ?, ?, ?)`, it.Seq, it.Kind, it.Key, it.Data, 1000+it.Seq)
		require.NoError(t, err)
	}
	for _, q := range []struct {
		service string
		item    int
	}{{"a", 0}, {"a", 1}, {"b", 1}, {"b", 2}, {"a", 3}} {
		it := items[q.item]
		_, err := raw.Exec(`INSERT INTO queue (service, seq, kind, key) VALUES (?, ?, ?, ?)`, q.service, it.Seq, it.Kind, it.Key)
		require.NoError(t, err)
	}
	_, err := raw.Exec(`INSERT INTO txns VALUES ('a', 500, 1, ?, 7, 1, 2)`, hash)
	require.NoError(t, err)
	_, err = raw.Exec(`INSERT INTO services (service, last_txn_id, bound_seq, queued) VALUES ('a', 500, 2, 1), ('b', 0, 0, 2)`)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	s := openStore(t, path, Options{})
	require.Equal(t, schemaVersion, pragma[int](t, s, "user_version"))
	// Migration 4 made a batch of each item: each was appended at a time
	// of its own, so by a call of its own.
	require.Equal(t, 4, count(t, s, "batches"))
	ctx := t.Context()
	txns, err := s.Txns(ctx, "a", 0)
	require.NoError(t, err)
	require.Len(t, txns, 1)
	require.Equal(t, int64(500), txns[0].ID)
	require.Equal(t, items[:2], txns[0].Items)
	require.Equal(t, hash, txns[0].Hash)
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, []store.Backlog{
		{Service: "a", Txns: 1, Queued: 1, Oldest: time.Unix(0, 1001)},
		{Service: "b", Queued: 2, Oldest: time.Unix(0, 1002)},
	}, bl)

	// Keys pending before the migration are still deduplicated: $3 is
	// queued for b, $1 bound for a; for b, $1 is new.
	require.NoError(t, s.Append(ctx, []store.Entry{
		{Item: store.Item{Kind: store.KindEphemeral, Key: "$3", Data: []byte("again")}, Services: []string{"b"}},
		{Item: store.Item{Kind: store.KindEvent, Key: "$1", Data: []byte("again")}, Services: []string{"a", "b"}},
	}))
	bl, err = s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, bl[0].Queued)
	require.Equal(t, 3, bl[1].Queued)

	ea, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	eb, err := s.Claim(ctx, "b", "o", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "a", ea, 500))
	require.Equal(t, 4, count(t, s, "items"), "$1 went with a; $2 stays for b")
	for _, svc := range []struct {
		name  string
		epoch store.Epoch
		want  []int64
	}{{"a", ea, []int64{4}}, {"b", eb, []int64{2, 3, 5}}} {
		txn, err := s.NextTxn(ctx, svc.name, svc.epoch, 1, lots)
		require.NoError(t, err)
		var seqs []int64
		for _, it := range txn.Items {
			seqs = append(seqs, it.Seq)
		}
		require.Equal(t, svc.want, seqs, svc.name)
		require.NoError(t, s.Complete(ctx, svc.name, svc.epoch, txn.ID))
	}
	for _, table := range []string{"batches", "queue", "txns"} {
		require.Zero(t, count(t, s, table), table)
	}
	// A key whose items were delivered is queued again.
	require.NoError(t, s.Append(ctx, []store.Entry{
		{Item: store.Item{Kind: store.KindEphemeral, Key: "$3", Data: []byte("later")}, Services: []string{"b"}},
	}))
	bl, err = s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, []store.Backlog{{Service: "b", Queued: 1, Oldest: bl[0].Oldest}}, bl)
}

func TestDeliveredKeysAreForgotten(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	const backlog = 3000
	entries := make([]store.Entry, 0, backlog)
	for i := range backlog {
		entries = append(entries, entry(fmt.Sprintf("$%d", i), "x", "a"))
	}
	require.NoError(t, s.Append(ctx, entries))
	require.Equal(t, backlog, s.w.mem.keys.svcs["a"].n)

	// A transaction formed but not completed keeps its keys pending.
	txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 1000, MaxBytes: 1 << 20})
	require.NoError(t, err)
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$0", "again", "a")}))
	require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
	require.Equal(t, backlog-1000, s.w.mem.keys.svcs["a"].n)

	// Once completed, its keys are new again; the queued ones are not.
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$0", "again", "a"), entry("$2999", "dup", "a")}))
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, backlog-1000+1, bl[0].Queued)

	// Once everything is delivered, no key is kept.
	for {
		txn, err := s.NextTxn(ctx, "a", e, 1, lots)
		require.NoError(t, err)
		if txn == nil {
			break
		}
		require.NoError(t, s.Complete(ctx, "a", e, txn.ID))
	}
	require.Empty(t, s.w.mem.keys.svcs)
	require.Zero(t, count(t, s, "batches"))
}

// TestKeysOfATransactionFormedBeforeReopen: Open finds the keys of the
// stored transactions; completing one makes its keys new again, while the
// keys of another stored transaction and of queued items stay pending.
func TestKeysOfATransactionFormedBeforeReopen(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, s.Append(ctx, []store.Entry{
		entry("$1", "1", "a"), {Item: store.Item{Kind: store.KindToDevice, Data: []byte("td")}, Services: []string{"a"}},
		entry("$2", "2", "a"), entry("$3", "3", "a"), entry("$4", "4", "a"),
	}))
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	first, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 2, MaxBytes: 1 << 20})
	require.NoError(t, err)
	second, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	require.NoError(t, err)
	require.Len(t, first.Items, 3, "$1, the to-device item, $2")
	require.Equal(t, "$3", second.Items[0].Key)
	require.NoError(t, s.Close())

	s = openStore(t, path, Options{})
	e, err = s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "a", e, first.ID))
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$1", "again", "a"), entry("$3", "again", "a"), entry("$4", "again", "a")}))
	bl, err := s.Backlogs(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, bl[0].Queued, "$4 queued before, and $1 again; $3 is still in a stored transaction")
}

// schemaV1 is the schema of version 1: an items row per item, a queue row
// per item and service, with the key for a unique index of pending keys.
const schemaV1 = `
CREATE TABLE items (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	kind    INTEGER NOT NULL,
	key     TEXT    NOT NULL,
	data    BLOB    NOT NULL,
	created INTEGER NOT NULL -- unix nanoseconds
);

CREATE TABLE queue (
	service TEXT    NOT NULL,
	seq     INTEGER NOT NULL,
	kind    INTEGER NOT NULL,
	key     TEXT    NOT NULL,
	PRIMARY KEY (service, seq)
) WITHOUT ROWID;

CREATE INDEX queue_by_seq ON queue (seq);

CREATE UNIQUE INDEX queue_pending_key ON queue (service, kind, key) WHERE key <> '';

CREATE TABLE txns (
	service   TEXT    NOT NULL,
	id        INTEGER NOT NULL,
	format    INTEGER NOT NULL,
	hash      BLOB    NOT NULL,
	created   INTEGER NOT NULL, -- unix nanoseconds
	first_seq INTEGER NOT NULL,
	last_seq  INTEGER NOT NULL,
	PRIMARY KEY (service, id)
) WITHOUT ROWID;

CREATE TABLE services (
	service       TEXT    NOT NULL PRIMARY KEY,
	last_txn_id   INTEGER NOT NULL DEFAULT 0,
	bound_seq     INTEGER NOT NULL DEFAULT 0,
	queued        INTEGER NOT NULL DEFAULT 0,
	lease_owner   TEXT    NOT NULL DEFAULT '',
	lease_epoch   INTEGER NOT NULL DEFAULT 0, -- 0: no lease granted
	lease_expires INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds
	max_epoch     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
`

// createVersion1 creates a database at path with schema version 1, as that
// version of the store left it, and returns a connection to fill it.
func createVersion1(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open(driverName, "file:"+path)
	require.NoError(t, err)
	raw.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA auto_vacuum = INCREMENTAL", "PRAGMA journal_mode = WAL"} {
		_, err := raw.Exec(q)
		require.NoError(t, err, q)
	}
	for _, q := range []string{schemaV1, "PRAGMA user_version = 1", fmt.Sprintf("PRAGMA application_id = %d", applicationID)} {
		_, err := raw.Exec(q)
		require.NoError(t, err, q)
	}
	return raw
}

// TestMigrationOfAFullFileIgnoresMaxSize migrates a version 1 file larger
// than Options.MaxSize (an outage filled it): the migration briefly needs
// more room than the cap, and must not leave the store unable to start.
func TestMigrationOfAFullFileIgnoresMaxSize(t *testing.T) {
	path := dbPath(t)
	raw := createVersion1(t, path)
	const n = 3000
	data := strings.Repeat("x", 1000)
	for i := 1; i <= n; i++ {
		key := fmt.Sprintf("$%d", i)
		_, err := raw.Exec(`INSERT INTO items (seq, kind, key, data, created) VALUES (?, 1, ?, ?, 1)`, i, key, data)
		require.NoError(t, err)
		_, err = raw.Exec(`INSERT INTO queue (service, seq, kind, key) VALUES ('a', ?, 1, ?)`, i, key)
		require.NoError(t, err)
	}
	_, err := raw.Exec(`INSERT INTO services (service, queued) VALUES ('a', ?)`, n)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	s := openStore(t, path, Options{MaxSize: MinMaxSize})
	require.Equal(t, schemaVersion, pragma[int](t, s, "user_version"))
	require.Equal(t, n, count(t, s, "items"))
	require.Equal(t, 2, pragma[int](t, s, "temp_store"), "temporary storage back in memory")
	// The cap is back; SQLite keeps it at the size the file had then.
	require.Less(t, pragma[int](t, s, "max_page_count"), 2*pragma[int](t, s, "page_count"))
	require.ErrorIs(t, s.Append(t.Context(), []store.Entry{entry("$new", "x", "a")}), ErrFull)
	bl, err := s.Backlogs(t.Context())
	require.NoError(t, err)
	require.Equal(t, n, bl[0].Queued)
}

// TestKeyWhoseSumCollidesIsNotTakenForADuplicate: a pending key's sum only
// says "maybe"; Append compares the stored item's kind and key before
// dropping an entry, so a 64-bit collision never loses an event.
func TestKeyWhoseSumCollidesIsNotTakenForADuplicate(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Append(ctx, []store.Entry{entry("$a", "a", "svc")}))
	// Make "$b" collide with "$a": its sum names "$a"'s item.
	var seqA int64
	s.w.mem.keys.svcs["svc"].each(keySum(s.keySeed, store.KindEvent, "$a"), func(seq int64) bool { seqA = seq; return false })
	require.NotZero(t, seqA)
	s.w.mem.keys.add("svc", seqA, keySum(s.keySeed, store.KindEvent, "$b"))

	require.NoError(t, s.Append(ctx, []store.Entry{entry("$b", "b", "svc"), entry("$a", "again", "svc")}))
	e, err := s.Claim(ctx, "svc", "o", time.Hour)
	require.NoError(t, err)
	txn, err := s.NextTxn(ctx, "svc", e, 1, lots)
	require.NoError(t, err)
	var data []string
	for _, it := range txn.Items {
		data = append(data, string(it.Data))
	}
	require.Equal(t, []string{"a", "b"}, data, "$b queued despite the colliding sum, $a not twice")
}

// TestTxnsReadsTransactionsThatEndAtABatchEdge stores one call of 300
// items (batches of 128, 128 and 44) and forms transactions that end on
// and beside the batches' edges, the first of a single item: Txns, which
// reads only the queue rows its ranges can reach, returns each one's
// items as NextTxn formed them.
func TestTxnsReadsTransactionsThatEndAtABatchEdge(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	e, err := s.Claim(ctx, "a", "o", time.Hour)
	require.NoError(t, err)
	entries := make([]store.Entry, 300)
	for i := range entries {
		entries[i] = entry(fmt.Sprintf("$%d", i), fmt.Sprint(i), "a")
	}
	require.NoError(t, s.Append(ctx, entries))
	var formed []store.Txn
	for _, size := range []int{1, 126, 1, 1, 128, 43} {
		txn, err := s.NextTxn(ctx, "a", e, 1, store.Limits{MaxItems: size, MaxBytes: 1 << 20})
		require.NoError(t, err)
		require.Len(t, txn.Items, size)
		formed = append(formed, *txn)
		got, err := s.Txns(ctx, "a", 0)
		require.NoError(t, err)
		require.Len(t, got, len(formed))
		for i := range got {
			require.Equal(t, formed[i].Items, got[i].Items, "transaction %d of %d", i, len(formed))
		}
	}
}
