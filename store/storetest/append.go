package storetest

import (
	"slices"
	"testing"

	"github.com/asdeliver/scheduler/store"
)

// otherKind is a kind the suite makes up. Stores keep kinds opaque: store.Kind
// says a store keeps an item's kind and returns it unchanged.
const otherKind = store.Kind(200)

// testAppendOrder: items come back in slice order within one Append and in
// call order across Appends, with increasing Seq.
func testAppendOrder(t *testing.T, s store.Store) {
	first := []store.Entry{
		entry("$1", `{"n":1}`, "a"),
		entry("$2", `{"n":2}`, "a"),
		entry("$3", `{"n":3}`, "a"),
	}
	second := []store.Entry{
		entry("$4", `{"n":4}`, "a"),
		entry("$5", `{"n":5}`, "a"),
	}
	mustAppend(t, s, first...)
	mustAppend(t, s, second...)
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	checkItems(t, "NextTxn after two Appends", tx.Items, itemsOf(slices.Concat(first, second)...)...)
}

// testDataRoundTrip: Kind, Key and Data come back exactly as appended,
// whatever the bytes.
func testDataRoundTrip(t *testing.T, s store.Store) {
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i % 251)
	}
	entries := []store.Entry{
		entry("$unicode:例え.org",
			`{"type":"m.room.message","content":{"body":"héllo wörld 🎉 日本語 \u00e9\n\"quoted\" \\ back"}}`, "a"),
		entry("$binary", "\x00\x01\xfe\xff not UTF-8: \xc3\x28 \xed\xa0\x80 \x00", "a"),
		entry("$trailing-space", "{} \n\t", "a"),
		{Item: store.Item{Kind: store.KindEvent, Key: "$big", Data: big}, Services: []string{"a"}},
		{Item: store.Item{Kind: otherKind, Key: "key with spaces 🎉 \x00", Data: []byte("x")}, Services: []string{"a"}},
	}
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	checkItems(t, "NextTxn", tx.Items, itemsOf(entries...)...)
	txns := mustTxns(t, s, "a", 0)
	if len(txns) != 1 {
		t.Fatalf("Txns: got %d txns, want 1", len(txns))
	}
	checkItems(t, "Txns", txns[0].Items, itemsOf(entries...)...)
}

// testAppendCopiesData: changing the caller's Data slice after Append does
// not change the stored item.
func testAppendCopiesData(t *testing.T, s store.Store) {
	const want = `{"n":1}`
	buf := []byte(want)
	mustAppend(t, s, store.Entry{
		Item:     store.Item{Kind: store.KindEvent, Key: "$1", Data: buf},
		Services: []string{"a"},
	})
	for i := range buf {
		buf[i] = 'X'
	}
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	checkItems(t, "NextTxn after the caller overwrote its Data", tx.Items, itemsOf(entry("$1", want, "a"))...)
}

// testAppendAtomic: a batch with one invalid entry stores none of its
// entries, and registers none of their keys as pending.
func testAppendAtomic(t *testing.T, s store.Store) {
	valid := []store.Entry{entry("$1", "one", "a"), entry("$2", "two", "a", "b")}
	for _, c := range []struct {
		name string
		bad  store.Entry
	}{
		{"entry without services", entry("$3", "three")},
		{"entry with empty data", entry("$3", "", "a")},
		{"entry with an empty service ID", entry("$3", "three", "a", "")},
	} {
		for pos := range len(valid) + 1 {
			batch := slices.Insert(slices.Clone(valid), pos, c.bad)
			err := s.Append(t.Context(), batch)
			checkErrIs(t, "Append of a batch with an "+c.name, err, store.ErrInvalid)
		}
	}
	checkBacklogs(t, "after Appends that failed", s)
	ea := mustClaim(t, s, "a", "owner")
	checkNoTxn(t, s, "a", ea)

	mustAppend(t, s, valid...)
	checkBacklogs(t, "after appending the valid entries alone", s, backlog("a", 0, 2), backlog("b", 0, 1))
	checkItems(t, "service a", drain(t, s, "a", ea), itemsOf(valid...)...)
}

// testDedupAcrossCalls: an entry whose Kind and Key are queued for a service
// is not queued again by a later Append.
func testDedupAcrossCalls(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "first", "a"))
	mustAppend(t, s, entry("$1", "second", "a"), entry("$2", "other", "a"))
	checkBacklogs(t, "after appending $1 twice", s, backlog("a", 0, 2))
	e := mustClaim(t, s, "a", "owner")
	checkItems(t, "service a", drain(t, s, "a", e),
		itemsOf(entry("$1", "first", "a"), entry("$2", "other", "a"))...)
}

// testDedupWithinCall: of two entries with the same Kind and Key in one
// Append, only the first is queued.
func testDedupWithinCall(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "first", "a"), entry("$2", "other", "a"), entry("$1", "second", "a"))
	checkBacklogs(t, "after one Append with $1 twice", s, backlog("a", 0, 2))
	e := mustClaim(t, s, "a", "owner")
	checkItems(t, "service a", drain(t, s, "a", e),
		itemsOf(entry("$1", "first", "a"), entry("$2", "other", "a"))...)
}

// testDedupBoundKey: a key bound to a stored, uncompleted transaction is
// still pending, so Append does not queue it again.
func testDedupBoundKey(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "first", "a"))
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	mustAppend(t, s, entry("$1", "second", "a"))
	checkBacklogs(t, "after appending $1 while it is in a stored txn", s, backlog("a", 1, 0))
	checkNoTxn(t, s, "a", e)
	checkTxns(t, "Txns", mustTxns(t, s, "a", 0), *tx)
}

// testDedupPerService: a key pending for one service does not keep it from
// another; an entry for two services is queued only for the one that does
// not have the key pending.
func testDedupPerService(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "for a", "a"))
	mustAppend(t, s, entry("$1", "for a and b", "a", "b"))
	mustAppend(t, s, entry("$1", "for b again", "b"))
	checkBacklogs(t, "after the Appends", s, backlog("a", 0, 1), backlog("b", 0, 1))
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")
	checkItems(t, "service a", drain(t, s, "a", ea), itemsOf(entry("$1", "for a", "a"))...)
	checkItems(t, "service b", drain(t, s, "b", eb), itemsOf(entry("$1", "for a and b", "b"))...)
}

// testDedupKindAndKey: the same Key under another Kind is a different item.
func testDedupKindAndKey(t *testing.T, s store.Store) {
	event := entry("$1", "event", "a")
	other := entry("$1", "other kind", "a")
	other.Kind = otherKind
	mustAppend(t, s, event)
	mustAppend(t, s, other)
	e := mustClaim(t, s, "a", "owner")
	checkItems(t, "service a", drain(t, s, "a", e), itemsOf(event, other)...)
}

// testDedupAfterComplete: once the transaction holding a key is completed,
// the key may be queued again.
func testDedupAfterComplete(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "first", "a"))
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, lots)
	mustComplete(t, s, "a", e, tx.ID)
	mustAppend(t, s, entry("$1", "again", "a"))
	checkItems(t, "service a after completing $1 and appending it again", drain(t, s, "a", e),
		itemsOf(entry("$1", "again", "a"))...)
}

// testDedupAfterPurge: once a service is purged, its keys may be queued
// again, whether they were queued or bound to a transaction.
func testDedupAfterPurge(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "first", "a"), entry("$2", "first", "a"))
	e := mustClaim(t, s, "a", "owner")
	mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	mustPurge(t, s, "a", e)
	again := []store.Entry{entry("$1", "again", "a"), entry("$2", "again", "a")}
	mustAppend(t, s, again...)
	checkItems(t, "service a after Purge and appending $1 and $2 again", drain(t, s, "a", e), itemsOf(again...)...)
}

// testEmptyKeyNotDeduplicated: entries with an empty Key are all queued,
// within one Append and across Appends.
func testEmptyKeyNotDeduplicated(t *testing.T, s store.Store) {
	entries := []store.Entry{entry("", "one", "a"), entry("", "two", "a"), entry("", "three", "a")}
	mustAppend(t, s, entries[:2]...)
	mustAppend(t, s, entries[2])
	e := mustClaim(t, s, "a", "owner")
	checkItems(t, "service a", drain(t, s, "a", e), itemsOf(entries...)...)
}

// testSharedItem: an item appended for two services stays available to
// each until that one completes it, whichever completes first, and whether
// the other has it queued or bound to a transaction.
func testSharedItem(t *testing.T, s store.Store) {
	ea := mustClaim(t, s, "a", "owner")
	eb := mustClaim(t, s, "b", "owner")

	// a completes first while b still has the item queued.
	x := entry("$x", `{"shared":"x"}`, "a", "b")
	mustAppend(t, s, x)
	txA := mustNextTxn(t, s, "a", ea, lots)
	mustComplete(t, s, "a", ea, txA.ID)
	checkBacklogs(t, "after a completed $x", s, backlog("b", 0, 1))
	txB := mustNextTxn(t, s, "b", eb, lots)
	checkItems(t, "service b after a completed $x", txB.Items, x.Item)
	if txA.Items[0].Seq != txB.Items[0].Seq {
		t.Errorf("$x has Seq %d for a and %d for b, want one item stored once", txA.Items[0].Seq, txB.Items[0].Seq)
	}
	mustComplete(t, s, "b", eb, txB.ID)
	checkBacklogs(t, "after both completed $x", s)

	// b binds the item first, then a completes it: b's stored txn keeps it.
	y := entry("$y", `{"shared":"y"}`, "a", "b")
	mustAppend(t, s, y)
	txB = mustNextTxn(t, s, "b", eb, lots)
	txA = mustNextTxn(t, s, "a", ea, lots)
	mustComplete(t, s, "a", ea, txA.ID)
	checkTxns(t, "Txns of b after a completed $y", mustTxns(t, s, "b", 0), *txB)
	checkItems(t, "b's stored txn", txB.Items, y.Item)
	mustComplete(t, s, "b", eb, txB.ID)
	checkBacklogs(t, "after both completed $y", s)
	checkNoTxn(t, s, "a", ea)
	checkNoTxn(t, s, "b", eb)
}
