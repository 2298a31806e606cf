package storetest

import (
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// The RunReopen subtests. Each starts with r.s open on an empty directory.
// After a reopen a subtest claims with the owner it used before, which
// works whether or not the store kept the lease across the restart.

// testReopenQueued: queued items, with their data, order and append time,
// survive a reopen.
func testReopenQueued(t *testing.T, r *reopener) {
	entries := []store.Entry{
		entry("$1", `{"body":"héllo 🎉 日本語"}`, "a"),
		entry("$2", "\x00\xff binary", "a", "b"),
		entry("", "no key", "a"),
	}
	before := time.Now()
	mustAppend(t, r.s, entries...)
	after := time.Now()

	s := r.reopen()
	checkBacklogs(t, "after reopen", s, backlog("a", 0, 3), backlog("b", 0, 1))
	checkWithin(t, "Oldest of a after reopen", oldestOf(t, s, "a"), before, after)
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")
	checkItems(t, "items of a after reopen", drain(t, s, "a", ea), itemsOf(entries...)...)
	checkItems(t, "items of b after reopen", drain(t, s, "b", eb), entries[1].Item)
}

// testReopenTxn: stored transactions keep their ID, Format, Hash and items
// across a reopen, their items stay bound, and they can be completed after.
func testReopenTxn(t *testing.T, r *reopener) {
	entries := numbered("n", 4, "a")
	mustAppend(t, r.s, entries...)
	e := mustClaim(t, r.s, "a", "owner")
	tx1, err := r.s.NextTxn(t.Context(), "a", e, 7, store.Limits{MaxItems: 2, MaxBytes: 1 << 20})
	if err != nil || tx1 == nil {
		t.Fatalf("NextTxn: got (%v, %v), want a txn and nil", tx1, err)
	}
	tx2, err := r.s.NextTxn(t.Context(), "a", e, 8, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	if err != nil || tx2 == nil {
		t.Fatalf("NextTxn: got (%v, %v), want a txn and nil", tx2, err)
	}

	s := r.reopen()
	checkTxns(t, "Txns after reopen", mustTxns(t, s, "a", 0), *tx1, *tx2)
	checkBacklogs(t, "after reopen", s, backlog("a", 2, 1))
	e = mustClaim(t, s, "a", "owner")
	mustComplete(t, s, "a", e, tx1.ID)
	checkTxns(t, "Txns after completing the first txn", mustTxns(t, s, "a", 0), *tx2)
	checkItems(t, "items still queued", drain(t, s, "a", e), entries[3].Item)
}

// testReopenCompleted: completed transactions and purged services stay gone
// after a reopen, and their keys may be queued again.
func testReopenCompleted(t *testing.T, r *reopener) {
	one, two, three := entry("$1", "one", "a"), entry("$2", "two", "a"), entry("$3", "three", "b")
	mustAppend(t, r.s, one, two, three)
	ea := mustClaim(t, r.s, "a", "owner")
	eb := mustClaim(t, r.s, "b", "owner")
	mustComplete(t, r.s, "a", ea, mustNextTxn(t, r.s, "a", ea, store.Limits{MaxItems: 1, MaxBytes: 1 << 20}).ID)
	mustPurge(t, r.s, "b", eb)

	s := r.reopen()
	checkBacklogs(t, "after reopen", s, backlog("a", 0, 1))
	if txns := mustTxns(t, s, "a", 0); len(txns) != 0 {
		t.Errorf("Txns of a after reopen: got %d txns with IDs %v, want none", len(txns), txnIDs(txns))
	}
	mustAppend(t, s, one, three)
	ea = mustClaim(t, s, "a", "owner")
	eb = mustClaim(t, s, "b", "owner")
	checkItems(t, "items of a", drain(t, s, "a", ea), two.Item, one.Item)
	checkItems(t, "items of b", drain(t, s, "b", eb), three.Item)
}

// testReopenShared: an item for two services that one has completed stays
// available to the other across a reopen, queued or bound to a transaction.
func testReopenShared(t *testing.T, r *reopener) {
	x, y := entry("$x", "shared x", "a", "b"), entry("$y", "shared y", "a", "b")
	mustAppend(t, r.s, x, y)
	ea := mustClaim(t, r.s, "a", "owner")
	eb := mustClaim(t, r.s, "b", "owner")
	mustComplete(t, r.s, "a", ea, mustNextTxn(t, r.s, "a", ea, lots).ID)
	txB := mustNextTxn(t, r.s, "b", eb, store.Limits{MaxItems: 1, MaxBytes: 1 << 20}) // binds $x

	s := r.reopen()
	checkBacklogs(t, "after reopen", s, backlog("b", 1, 1))
	checkTxns(t, "Txns of b after reopen", mustTxns(t, s, "b", 0), *txB)
	eb = mustClaim(t, s, "b", "owner")
	checkItems(t, "items queued for b", drain(t, s, "b", eb), y.Item)
}

// testReopenSeq: items appended after a reopen come after those appended
// before, with a greater Seq.
func testReopenSeq(t *testing.T, r *reopener) {
	entries := numbered("n", 3, "a")
	for _, en := range entries {
		mustAppend(t, r.s, en)
		r.reopen()
	}
	e := mustClaim(t, r.s, "a", "owner")
	checkItems(t, "items appended across reopens", drain(t, r.s, "a", e), itemsOf(entries...)...)
}

// checkIDAfter forms a transaction of a new item for service and fails t
// unless its ID is greater than earlier.
func checkIDAfter(t *testing.T, what string, s store.Store, service string, earlier int64) {
	t.Helper()
	mustAppend(t, s, entry("$after", "after", service))
	e := mustClaim(t, s, service, "owner")
	tx := mustNextTxn(t, s, service, e, lots)
	if tx.ID <= earlier {
		t.Errorf("%s: got txn ID %d, want more than every earlier ID (up to %d)", what, tx.ID, earlier)
	}
}

// formSome forms n one-item transactions of service from new items.
func formSome(t *testing.T, s store.Store, service string, n int) []*store.Txn {
	t.Helper()
	mustAppend(t, s, numbered("pre", n, service)...)
	e := mustClaim(t, s, service, "owner")
	out := make([]*store.Txn, n)
	for i := range out {
		out[i] = mustNextTxn(t, s, service, e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	}
	return out
}

// testReopenIDsPending: IDs after a reopen exceed those before, with
// transactions still stored.
func testReopenIDsPending(t *testing.T, r *reopener) {
	txs := formSome(t, r.s, "a", 3)
	r.reopen()
	checkIDAfter(t, "first txn after reopen", r.s, "a", maxID(txs...))
}

// testReopenIDsIdle: IDs after a reopen exceed those before when every
// transaction was completed before, also over several reopens in a row.
func testReopenIDsIdle(t *testing.T, r *reopener) {
	txs := formSome(t, r.s, "a", 3)
	e := mustClaim(t, r.s, "a", "owner")
	for _, tx := range txs {
		mustComplete(t, r.s, "a", e, tx.ID)
	}
	checkBacklogs(t, "before reopen", r.s)
	r.reopen()
	r.reopen()
	checkBacklogs(t, "after reopen", r.s)
	checkIDAfter(t, "first txn after reopen with nothing pending", r.s, "a", maxID(txs...))
}

// testReopenIDsPurged: IDs after a reopen exceed those before a Purge.
func testReopenIDsPurged(t *testing.T, r *reopener) {
	txs := formSome(t, r.s, "a", 3)
	mustPurge(t, r.s, "a", mustClaim(t, r.s, "a", "owner"))
	r.reopen()
	checkIDAfter(t, "first txn after Purge and reopen", r.s, "a", maxID(txs...))
}

// testReopenEpochs: epochs granted after a reopen exceed those before, and
// the old ones are stale.
func testReopenEpochs(t *testing.T, r *reopener) {
	mustAppend(t, r.s, entry("$1", "one", "a"))
	e1 := mustClaim(t, r.s, "a", "owner1")
	mustRelease(t, r.s, "a", e1)
	e2 := mustClaim(t, r.s, "a", "owner2")
	mustRelease(t, r.s, "a", e2)

	s := r.reopen()
	e3 := mustClaim(t, s, "a", "owner3")
	checkHigher(t, "Claim after reopen", e3, e2)
	checkStale(t, "epoch released before reopen", s, "a", e2, 1)
	checkBacklogs(t, "after stale calls", s, backlog("a", 0, 1))
}

// testReopenExpiredLease: a lease left to expire over a reopen is granted
// to another owner with a greater epoch, and the old one is stale.
func testReopenExpiredLease(t *testing.T, r *reopener) {
	mustAppend(t, r.s, entry("$1", "one", "a"))
	e1 := mustClaimFor(t, r.s, "a", "owner1", tinyTTL)

	s := r.reopen()
	e2 := claimWhenExpired(t, s, "a", "owner2")
	checkHigher(t, "Claim after reopen and expiry", e2, e1)
	checkStale(t, "epoch expired over reopen", s, "a", e1, 1)
	checkItems(t, "items for the new owner", drain(t, s, "a", e2), entry("$1", "one", "a").Item)
}

// testReopenDedup: keys queued or bound to a stored transaction before a
// reopen are still pending after it.
func testReopenDedup(t *testing.T, r *reopener) {
	one, two := entry("$1", "one", "a"), entry("$2", "two", "a")
	mustAppend(t, r.s, one, two)
	e := mustClaim(t, r.s, "a", "owner")
	tx := mustNextTxn(t, r.s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20}) // binds $1

	s := r.reopen()
	mustAppend(t, s, entry("$1", "one again", "a"), entry("$2", "two again", "a"))
	checkBacklogs(t, "after appending pending keys again", s, backlog("a", 1, 1))
	e = mustClaim(t, s, "a", "owner")
	mustComplete(t, s, "a", e, tx.ID)
	checkItems(t, "items queued for a", drain(t, s, "a", e), two.Item)
}
