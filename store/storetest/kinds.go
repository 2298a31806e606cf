package storetest

import (
	"fmt"
	"testing"

	"github.com/asdeliver/scheduler/store"
)

// kindEntry returns an entry of kind k with key and data, queued for
// services.
func kindEntry(k store.Kind, key, data string, services ...string) store.Entry {
	e := entry(key, data, services...)
	e.Kind = k
	return e
}

// Short names for the kinds the tests below mix.
const (
	ev  = store.KindEvent
	eph = store.KindEphemeral
	tod = store.KindToDevice
)

// mixed returns entries for service "a", one per kind in kinds, keyed and
// numbered in order ("k0", "k1", ...), so that a failure shows which one
// went where.
func mixed(kinds ...store.Kind) []store.Entry {
	out := make([]store.Entry, len(kinds))
	for i, k := range kinds {
		out[i] = kindEntry(k, fmt.Sprintf("k%d", i), fmt.Sprintf(`{"n":%d,"kind":%d}`, i, k), "a")
	}
	return out
}

// testStopsAtKindLimit: NextTxn takes items in Seq order and stops at the
// first item whose kind is full; it never skips that item to take later
// items of other kinds.
func testStopsAtKindLimit(t *testing.T, s store.Store) {
	entries := mixed(ev, ev, eph, ev, eph, eph, ev)
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{MaxItems: 10, MaxItemsByKind: map[store.Kind]int{eph: 1}, MaxBytes: 1 << 20}
	for i, want := range [][]store.Entry{
		entries[0:4], // the second ephemeral item ends it, although an event follows
		entries[4:5], // the third ephemeral item ends it at once
		entries[5:7],
	} {
		tx := mustNextTxn(t, s, "a", e, lim)
		checkItems(t, fmt.Sprintf("txn %d with at most 1 ephemeral item", i+1), tx.Items, itemsOf(want...)...)
	}
	checkNoTxn(t, s, "a", e)
}

// testKindLimitsIndependent: each kind is counted against its own limit;
// kinds that MaxItemsByKind does not list share nothing but the value of
// MaxItems, and a listed KindEvent overrides MaxItems for events.
func testKindLimitsIndependent(t *testing.T, s store.Store) {
	t.Run("each kind its own count", func(t *testing.T) {
		entries := mixed(eph, eph, ev, tod, eph, ev, otherKind, otherKind, ev, tod)
		for i := range entries {
			entries[i].Services = []string{"k"}
		}
		mustAppend(t, s, entries...)
		e := mustClaim(t, s, "k", "owner")
		lim := store.Limits{MaxItems: 2, MaxItemsByKind: map[store.Kind]int{eph: 3, tod: 1}, MaxBytes: 1 << 20}
		// 3 ephemeral, 2 events, 1 to-device and 2 of the unlisted kind
		// fit together; the third event is one too many.
		tx := mustNextTxn(t, s, "k", e, lim)
		checkItems(t, "first txn", tx.Items, itemsOf(entries[:8]...)...)
		tx = mustNextTxn(t, s, "k", e, lim)
		checkItems(t, "second txn", tx.Items, itemsOf(entries[8:]...)...)
		checkNoTxn(t, s, "k", e)
	})
	t.Run("listed KindEvent overrides MaxItems", func(t *testing.T) {
		entries := mixed(ev, ev, ev, ev, otherKind, otherKind)
		for i := range entries {
			entries[i].Services = []string{"o"}
		}
		mustAppend(t, s, entries...)
		e := mustClaim(t, s, "o", "owner")
		lim := store.Limits{MaxItems: 1, MaxItemsByKind: map[store.Kind]int{ev: 3}, MaxBytes: 1 << 20}
		for i, want := range [][]store.Entry{entries[0:3], entries[3:5], entries[5:6]} {
			tx := mustNextTxn(t, s, "o", e, lim)
			checkItems(t, fmt.Sprintf("txn %d with 3 events and 1 other item at most", i+1), tx.Items, itemsOf(want...)...)
		}
		checkNoTxn(t, s, "o", e)
	})
	t.Run("byte limit counts every kind", func(t *testing.T) {
		var entries []store.Entry
		for i, k := range []store.Kind{ev, eph, tod, ev, eph, tod} {
			entries = append(entries, kindEntry(k, fmt.Sprintf("b%d", i), fmt.Sprintf("%010d", i), "b")) // 10 bytes each
		}
		mustAppend(t, s, entries...)
		e := mustClaim(t, s, "b", "owner")
		lim := store.Limits{MaxItems: 100, MaxItemsByKind: map[store.Kind]int{eph: 100, tod: 100}, MaxBytes: 25}
		for i, want := range [][]store.Entry{entries[0:2], entries[2:4], entries[4:6]} {
			tx := mustNextTxn(t, s, "b", e, lim)
			checkItems(t, fmt.Sprintf("txn %d with MaxBytes 25", i+1), tx.Items, itemsOf(want...)...)
		}
		checkNoTxn(t, s, "b", e)
	})
}

// testMixedKindsKeepSeqOrder: items of several kinds, appended over several
// calls, come out of successive transactions in exactly their Seq order
// whatever the limits, and Txns lists them as formed.
func testMixedKindsKeepSeqOrder(t *testing.T, s store.Store) {
	kinds := []store.Kind{ev, eph, eph, tod, ev, store.KindDeviceLists, store.KindKeyCounts, eph, tod, tod,
		ev, ev, eph, store.KindKeyCounts, tod, eph, ev, store.KindDeviceLists, eph, eph, eph, ev}
	entries := mixed(kinds...)
	mustAppend(t, s, entries[:5]...)
	mustAppend(t, s, entries[5:12]...)
	mustAppend(t, s, entries[12:]...)
	e := mustClaim(t, s, "a", "owner")
	lim := store.Limits{
		MaxItems:       2,
		MaxItemsByKind: map[store.Kind]int{eph: 2, tod: 1, store.KindKeyCounts: 1},
		MaxBytes:       1 << 20,
	}
	var got []store.Item
	var formed []store.Txn
	for {
		tx := nextTxn(t, s, "a", e, lim)
		if tx == nil {
			break
		}
		perKind := map[store.Kind]int{}
		for _, it := range tx.Items {
			perKind[it.Kind]++
		}
		for k, n := range perKind {
			if n > lim.MaxFor(k) {
				t.Errorf("txn %d holds %d items of kind %d, want at most %d", tx.ID, n, k, lim.MaxFor(k))
			}
		}
		got = append(got, tx.Items...)
		formed = append(formed, *tx)
	}
	checkItems(t, "items of every txn, in order", got, itemsOf(entries...)...)
	checkTxns(t, "Txns", mustTxns(t, s, "a", 0), formed...)
	if len(formed) < 2 {
		t.Errorf("got %d txns, want the limits to have cut the queue into several", len(formed))
	}
}

// testInvalidKindLimit: a MaxItemsByKind value below 1 fails NextTxn with
// ErrInvalid and binds nothing.
func testInvalidKindLimit(t *testing.T, s store.Store) {
	entries := mixed(ev, eph)
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	for _, n := range []int{0, -1} {
		lim := store.Limits{MaxItems: 10, MaxItemsByKind: map[store.Kind]int{ev: 10, eph: n}, MaxBytes: 1 << 20}
		_, err := s.NextTxn(t.Context(), "a", e, format, lim)
		checkErrIs(t, fmt.Sprintf("NextTxn with MaxItemsByKind[%d] = %d", eph, n), err, store.ErrInvalid)
	}
	checkBacklogs(t, "after the invalid NextTxn calls", s, backlog("a", 0, 2))
	checkItems(t, "items still queued", drain(t, s, "a", e), itemsOf(entries...)...)
}
