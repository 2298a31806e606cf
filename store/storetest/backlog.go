package storetest

import (
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// testBacklogCounts: Backlogs counts stored transactions and queued items
// (not yet bound) of each service.
func testBacklogCounts(t *testing.T, s store.Store) {
	checkBacklogs(t, "empty store", s)
	mustAppend(t, s, numbered("a", 5, "a")...)
	mustAppend(t, s, entry("$b", "for b", "b"), entry("$c", "for c", "c"))
	ea := mustClaim(t, s, "a", "owner")
	ec := mustClaim(t, s, "c", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	mustNextTxn(t, s, "a", ea, lim)
	mustNextTxn(t, s, "a", ea, lim)
	mustNextTxn(t, s, "c", ec, lim)
	checkBacklogs(t, "after forming txns", s, backlog("a", 2, 3), backlog("b", 0, 1), backlog("c", 1, 0))
}

// testBacklogsOmitIdle: a service with nothing pending is not reported,
// whether it never had work, only holds a lease, or has been drained.
func testBacklogsOmitIdle(t *testing.T, s store.Store) {
	mustClaim(t, s, "leased", "owner")
	mustAppend(t, s, entry("$1", "one", "drained"), entry("$2", "two", "busy"))
	e := mustClaim(t, s, "drained", "owner")
	drain(t, s, "drained", e)
	checkBacklogs(t, "with one busy service", s, backlog("busy", 0, 1))
}

// testBacklogsSorted: Backlogs lists services in service ID order, that is
// the byte order of Go string comparison.
func testBacklogsSorted(t *testing.T, s store.Store) {
	for _, svc := range []string{"svc9", "bridge", "svc10", "Zulip", "alpha", "svc-1"} {
		mustAppend(t, s, entry("$"+svc, "for "+svc, svc))
	}
	checkBacklogs(t, "with six services", s,
		backlog("Zulip", 0, 1), backlog("alpha", 0, 1), backlog("bridge", 0, 1),
		backlog("svc-1", 0, 1), backlog("svc10", 0, 1), backlog("svc9", 0, 1))
}

// oldestOf returns the Oldest that Backlogs reports for service.
func oldestOf(t *testing.T, s store.Store, service string) time.Time {
	t.Helper()
	for _, b := range mustBacklogs(t, s) {
		if b.Service == service {
			return b.Oldest
		}
	}
	t.Fatalf("Backlogs: service %q missing, want it listed", service)
	return time.Time{}
}

// checkWithin fails t unless got lies in [from, to], give or take
// clockSlack.
func checkWithin(t *testing.T, what string, got, from, to time.Time) {
	t.Helper()
	if got.Before(from.Add(-clockSlack)) || got.After(to.Add(clockSlack)) {
		t.Errorf("%s: got %v, want between %v and %v (give or take %v)", what, got, from, to, clockSlack)
	}
}

// testBacklogOldest: Oldest is the append time of the oldest pending item,
// queued or bound to a stored transaction.
func testBacklogOldest(t *testing.T, s store.Store) {
	before1 := time.Now()
	mustAppend(t, s, entry("$1", "one", "a"))
	after1 := time.Now()
	first := oldestOf(t, s, "a")
	checkWithin(t, "Oldest with $1 queued", first, before1, after1)

	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	if got := oldestOf(t, s, "a"); !got.Equal(first) {
		t.Errorf("Oldest with $1 bound to a stored txn: got %v, want %v as while it was queued", got, first)
	}

	// Let the clock move on, so that a store reporting the newest item
	// instead of the oldest is caught.
	for time.Since(after1) < 20*time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	before2 := time.Now()
	mustAppend(t, s, entry("$2", "two", "a"))
	after2 := time.Now()
	if got := oldestOf(t, s, "a"); !got.Equal(first) {
		t.Errorf("Oldest with $1 in a txn and $2 queued after it: got %v, want %v, the append time of $1", got, first)
	}

	mustComplete(t, s, "a", e, tx.ID)
	checkWithin(t, "Oldest after $1 was completed", oldestOf(t, s, "a"), before2, after2)
}

// testPurge: Purge deletes the stored transactions and queued items of one
// service; other services keep theirs, shared items included.
func testPurge(t *testing.T, s store.Store) {
	one, two, three := entry("$1", "one", "a"), entry("$2", "two", "a", "b"), entry("$3", "three", "a")
	four, five := entry("$4", "four", "b"), entry("$5", "five", "c")
	mustAppend(t, s, one, two, three, four, five)
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")
	ec := mustClaim(t, s, "c", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	mustNextTxn(t, s, "a", ea, lim) // binds $1
	txB := mustNextTxn(t, s, "b", eb, lim)

	mustPurge(t, s, "a", ea)
	checkBacklogs(t, "after purging a", s, backlog("b", 1, 1), backlog("c", 0, 1))
	if txns := mustTxns(t, s, "a", 0); len(txns) != 0 {
		t.Errorf("Txns of a after Purge: got %d txns with IDs %v, want none", len(txns), txnIDs(txns))
	}
	checkNoTxn(t, s, "a", ea)
	checkTxns(t, "Txns of b after purging a", mustTxns(t, s, "b", 0), *txB)
	checkItems(t, "b's stored txn", txB.Items, two.Item)
	checkItems(t, "items queued for b", drain(t, s, "b", eb), four.Item)
	checkItems(t, "items queued for c", drain(t, s, "c", ec), five.Item)
}

// testPurgeKeepsLease: Purge leaves the lease with its holder.
func testPurgeKeepsLease(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a"))
	e := mustClaim(t, s, "a", "owner")
	mustPurge(t, s, "a", e)
	_, err := s.Claim(t.Context(), "a", "other", longTTL)
	checkErrIs(t, "Claim by another owner after Purge", err, store.ErrLeaseHeld)
	if got := mustClaim(t, s, "a", "owner"); got != e {
		t.Errorf("Claim by the holder after Purge: got epoch %d, want %d", got, e)
	}
	mustPurge(t, s, "a", e) // nothing left to purge
	checkNoTxn(t, s, "a", e)
}
