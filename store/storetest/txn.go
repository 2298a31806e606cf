package storetest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// numbered returns n event entries for services, keyed "$<prefix><i>".
func numbered(prefix string, n int, services ...string) []store.Entry {
	out := make([]store.Entry, n)
	for i := range out {
		out[i] = entry(fmt.Sprintf("$%s%d", prefix, i), fmt.Sprintf(`{"%s":%d}`, prefix, i), services...)
	}
	return out
}

// testNextTxnEmpty: NextTxn returns (nil, nil) for a service that never had
// an item, one whose items are for others only, and one drained.
func testNextTxnEmpty(t *testing.T, s store.Store) {
	e := mustClaim(t, s, "a", "owner")
	checkNoTxn(t, s, "a", e)
	mustAppend(t, s, entry("$1", "for b", "b"))
	checkNoTxn(t, s, "a", e)
	mustAppend(t, s, entry("$2", "for a", "a"))
	mustComplete(t, s, "a", e, mustNextTxn(t, s, "a", e, lots).ID)
	checkNoTxn(t, s, "a", e)
}

// testMaxItems: a transaction holds at most MaxItems items.
func testMaxItems(t *testing.T, s store.Store) {
	entries := numbered("n", 5, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 2, MaxBytes: 1 << 20}
	for _, want := range [][]store.Entry{entries[0:2], entries[2:4], entries[4:5]} {
		tx := mustNextTxn(t, s, "a", e, lim)
		checkItems(t, fmt.Sprintf("NextTxn with MaxItems %d", lim.MaxItems), tx.Items, itemsOf(want...)...)
	}
	checkNoTxn(t, s, "a", e)
}

// testMaxBytes: a transaction holds at most MaxBytes of Data; an item that
// makes the sum exactly MaxBytes still fits.
func testMaxBytes(t *testing.T, s store.Store) {
	entries := make([]store.Entry, 7)
	for i := range entries {
		entries[i] = entry(fmt.Sprintf("$%d", i), fmt.Sprintf("%010d", i), "a") // 10 bytes each
	}
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	next := 0
	for _, c := range []struct{ maxBytes, items int }{
		{25, 2}, // 20 fits, 30 does not
		{30, 3}, // exactly 30 fits
		{19, 1},
		{10, 1}, // exactly one item
	} {
		want := entries[next : next+c.items]
		next += c.items
		tx := mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 100, MaxBytes: c.maxBytes})
		checkItems(t, fmt.Sprintf("NextTxn with MaxBytes %d", c.maxBytes), tx.Items, itemsOf(want...)...)
	}
	checkNoTxn(t, s, "a", e)
}

// testFirstItemFits: an item larger than MaxBytes still forms a transaction,
// alone.
func testFirstItemFits(t *testing.T, s store.Store) {
	big1 := entry("$big1", string(bytes.Repeat([]byte("x"), 100)), "a")
	small := entry("$small", "12345", "a")
	big2 := entry("$big2", string(bytes.Repeat([]byte("y"), 100)), "a")
	mustAppend(t, s, big1, small, big2)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 100, MaxBytes: 10}
	checkItems(t, "first NextTxn with MaxBytes 10", mustNextTxn(t, s, "a", e, lim).Items, big1.Item)
	checkItems(t, "second NextTxn with MaxBytes 10", mustNextTxn(t, s, "a", e, lim).Items, small.Item)
	checkItems(t, "third NextTxn with MaxBytes 10", mustNextTxn(t, s, "a", e, lim).Items, big2.Item)
	checkNoTxn(t, s, "a", e)
}

// testDisjointTxns: consumption is claim-based: each NextTxn takes the
// oldest items not yet bound, whatever was completed in between.
func testDisjointTxns(t *testing.T, s store.Store) {
	entries := numbered("n", 6, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 2, MaxBytes: 1 << 20}
	tx1 := mustNextTxn(t, s, "a", e, lim)
	tx2 := mustNextTxn(t, s, "a", e, lim)
	checkItems(t, "first txn", tx1.Items, itemsOf(entries[0:2]...)...)
	checkItems(t, "second txn", tx2.Items, itemsOf(entries[2:4]...)...)
	mustComplete(t, s, "a", e, tx2.ID) // out of order
	tx3 := mustNextTxn(t, s, "a", e, lim)
	checkItems(t, "third txn, after completing the second", tx3.Items, itemsOf(entries[4:6]...)...)
	checkNoTxn(t, s, "a", e)
	checkTxns(t, "Txns", mustTxns(t, s, "a", 0), *tx1, *tx3)
}

// testBoundItemsNotReturned: items bound to a stored transaction are never
// returned by NextTxn again, even while that transaction is uncompleted.
func testBoundItemsNotReturned(t *testing.T, s store.Store) {
	entries := numbered("n", 3, "a")
	mustAppend(t, s, entries[:2]...)
	e := mustClaim(t, s, "a", "owner")
	tx1 := mustNextTxn(t, s, "a", e, lots)
	checkNoTxn(t, s, "a", e)
	mustAppend(t, s, entries[2])
	tx2 := mustNextTxn(t, s, "a", e, lots)
	checkItems(t, "NextTxn after appending one more item", tx2.Items, entries[2].Item)
	checkNoTxn(t, s, "a", e)
	checkBacklogs(t, "with two stored txns", s, backlog("a", 2, 0))
	checkTxns(t, "Txns", mustTxns(t, s, "a", 0), *tx1, *tx2)
}

// testTxnFields: a formed transaction carries its service, the format passed
// to NextTxn, HashItems of its items and the time it was formed.
func testTxnFields(t *testing.T, s store.Store) {
	entries := numbered("n", 3, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 2, MaxBytes: 1 << 20}
	for _, f := range []int{42, 7} {
		before := time.Now()
		tx, err := s.NextTxn(t.Context(), "a", e, f, lim)
		after := time.Now()
		if err != nil || tx == nil {
			t.Fatalf("NextTxn(format %d): got (%v, %v), want a txn and nil", f, tx, err)
		}
		if tx.Service != "a" {
			t.Errorf("txn %d: got Service %q, want %q", tx.ID, tx.Service, "a")
		}
		if tx.Format != f {
			t.Errorf("txn %d: got Format %d, want %d", tx.ID, tx.Format, f)
		}
		if want := store.HashItems(tx.Items); !bytes.Equal(tx.Hash, want) {
			t.Errorf("txn %d: got Hash %x, want HashItems of its items %x", tx.ID, tx.Hash, want)
		}
		if tx.Created.Before(before.Add(-clockSlack)) || tx.Created.After(after.Add(clockSlack)) {
			t.Errorf("txn %d: got Created %v, want between %v and %v", tx.ID, tx.Created, before, after)
		}
		txns := mustTxns(t, s, "a", 0)
		checkTxn(t, "last of Txns", txns[len(txns)-1], *tx)
	}
}

// testIDsIncrease: every transaction of a service gets a higher ID than the
// one before.
func testIDsIncrease(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 5, "a")...)
	e := mustClaim(t, s, "a", "owner")
	var last int64
	for i := range 5 {
		tx := mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
		if i > 0 && tx.ID <= last {
			t.Errorf("txn %d: got ID %d after ID %d, want IDs strictly increasing", i+1, tx.ID, last)
		}
		last = tx.ID
	}
}

// testIDsAfterComplete: IDs keep increasing after every transaction was
// completed, whatever the order of completion.
func testIDsAfterComplete(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 3, "a")...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	txs := []*store.Txn{mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim)}
	for i := len(txs) - 1; i >= 0; i-- {
		mustComplete(t, s, "a", e, txs[i].ID)
	}
	checkBacklogs(t, "after completing every txn", s)
	mustAppend(t, s, entry("$later", "later", "a"))
	if tx := mustNextTxn(t, s, "a", e, lots); tx.ID <= maxID(txs...) {
		t.Errorf("txn after completing all: got ID %d, want more than every earlier ID (up to %d)", tx.ID, maxID(txs...))
	}
}

// testIDsAfterPurge: IDs keep increasing after Purge.
func testIDsAfterPurge(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 3, "a")...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	txs := []*store.Txn{mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim)}
	mustPurge(t, s, "a", e)
	mustAppend(t, s, entry("$later", "later", "a"))
	if tx := mustNextTxn(t, s, "a", e, lots); tx.ID <= maxID(txs...) {
		t.Errorf("txn after Purge: got ID %d, want more than every earlier ID (up to %d)", tx.ID, maxID(txs...))
	}
}

// testIDsPerService: with transactions of two services formed in turn, each
// service's IDs strictly increase.
func testIDsPerService(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 4, "a", "b")...)
	e := map[string]store.Epoch{"a": mustClaim(t, s, "a", "owner"), "b": mustClaim(t, s, "b", "owner")}
	last := map[string]int64{}
	for _, svc := range []string{"a", "b", "b", "a", "a", "b", "a", "b"} {
		tx := mustNextTxn(t, s, svc, e[svc], store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
		if prev, ok := last[svc]; ok && tx.ID <= prev {
			t.Errorf("service %s: got ID %d after ID %d, want IDs strictly increasing per service", svc, tx.ID, prev)
		}
		last[svc] = tx.ID
	}
}

// testTxnsList: Txns lists the stored transactions of one service, lowest ID
// first, each exactly as NextTxn returned it.
func testTxnsList(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 6, "a")...)
	mustAppend(t, s, entry("$b", "for b", "b"))
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")
	var want []store.Txn
	for i, n := range []int{1, 3, 2} {
		tx, err := s.NextTxn(t.Context(), "a", ea, 10+i, store.Limits{MaxItems: n, MaxBytes: 1 << 20})
		if err != nil || tx == nil {
			t.Fatalf("NextTxn: got (%v, %v), want a txn and nil", tx, err)
		}
		want = append(want, *tx)
	}
	txB := mustNextTxn(t, s, "b", eb, lots)
	checkTxns(t, "Txns of a", mustTxns(t, s, "a", 0), want...)
	checkTxns(t, "Txns of b", mustTxns(t, s, "b", 0), *txB)
}

// testTxnsLimit: Txns returns the oldest limit transactions; limit <= 0
// means all.
func testTxnsLimit(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 3, "a")...)
	e := mustClaim(t, s, "a", "owner")
	var all []store.Txn
	for range 3 {
		all = append(all, *mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20}))
	}
	for _, c := range []struct{ limit, want int }{{1, 1}, {2, 2}, {3, 3}, {10, 3}, {0, 3}, {-1, 3}} {
		checkTxns(t, fmt.Sprintf("Txns with limit %d", c.limit), mustTxns(t, s, "a", c.limit), all[:c.want]...)
	}
}

// testTxnsEmpty: Txns of a service without stored transactions returns none
// and no error.
func testTxnsEmpty(t *testing.T, s store.Store) {
	if txns := mustTxns(t, s, "nobody", 0); len(txns) != 0 {
		t.Errorf("Txns of a service never seen: got %d txns, want 0", len(txns))
	}
	mustAppend(t, s, entry("$1", "queued", "a"))
	if txns := mustTxns(t, s, "a", 0); len(txns) != 0 {
		t.Errorf("Txns of a service with queued items only: got %d txns, want 0", len(txns))
	}
}

// testComplete: Complete deletes the one transaction, even out of order,
// and leaves the others and the queue as they were.
func testComplete(t *testing.T, s store.Store) {
	entries := numbered("n", 4, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	tx1, tx2, tx3 := mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim)
	mustComplete(t, s, "a", e, tx2.ID)
	checkTxns(t, "Txns after completing the second txn", mustTxns(t, s, "a", 0), *tx1, *tx3)
	checkBacklogs(t, "after completing the second txn", s, backlog("a", 2, 1))
	mustComplete(t, s, "a", e, tx1.ID)
	checkTxns(t, "Txns after completing the first txn", mustTxns(t, s, "a", 0), *tx3)
	checkItems(t, "items still queued", drain(t, s, "a", e), entries[3].Item)
}

// testCompleteUnknown: completing an ID that the service never had, or that
// belongs to another service, returns nil and changes nothing.
func testCompleteUnknown(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a", "b"), entry("$2", "two", "a"))
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")
	txA := mustNextTxn(t, s, "a", ea, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	for _, c := range []struct {
		service string
		epoch   store.Epoch
		id      int64
	}{
		{"a", ea, txA.ID + 1},
		{"a", ea, txA.ID - 1},
		{"a", ea, 0},
		{"a", ea, -1},
		{"b", eb, txA.ID}, // a's ID, on service b
	} {
		if err := s.Complete(t.Context(), c.service, c.epoch, c.id); err != nil {
			t.Errorf("Complete(%q, id %d) of an unknown ID: got error %v, want nil", c.service, c.id, err)
		}
	}
	checkTxns(t, "Txns of a", mustTxns(t, s, "a", 0), *txA)
	checkBacklogs(t, "after completing unknown IDs", s, backlog("a", 1, 1), backlog("b", 0, 1))
}

// testCompleteTwice: completing the same transaction again returns nil and
// changes nothing.
func testCompleteTwice(t *testing.T, s store.Store) {
	mustAppend(t, s, numbered("n", 3, "a")...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 1, MaxBytes: 1 << 20}
	tx1, tx2 := mustNextTxn(t, s, "a", e, lim), mustNextTxn(t, s, "a", e, lim)
	mustComplete(t, s, "a", e, tx1.ID)
	if err := s.Complete(t.Context(), "a", e, tx1.ID); err != nil {
		t.Errorf("second Complete of txn %d: got error %v, want nil", tx1.ID, err)
	}
	checkTxns(t, "Txns after completing the first txn twice", mustTxns(t, s, "a", 0), *tx2)
	checkBacklogs(t, "after completing the first txn twice", s, backlog("a", 1, 1))
}
