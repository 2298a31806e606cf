package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

const (
	// longTTL is the term of a lease that must not expire during a test.
	longTTL = time.Hour
	// tinyTTL is the term of a lease that a test waits to see expire.
	tinyTTL = time.Millisecond
	// waitFor bounds every wait for a condition, such as a lease expiring.
	waitFor = 10 * time.Second
	// clockSlack is how far a timestamp the store reports may stray from the
	// window in which the event happened, for stores that keep time at a
	// coarser precision than time.Time.
	clockSlack = time.Second
	// format is the body format version the suite passes to NextTxn when the
	// value does not matter.
	format = 1
)

// lots are limits that never cut a transaction short in these tests.
var lots = store.Limits{MaxItems: 1 << 20, MaxBytes: 1 << 30}

// entry returns an event entry with key and data, queued for services.
func entry(key, data string, services ...string) store.Entry {
	return store.Entry{
		Item:     store.Item{Kind: store.KindEvent, Key: key, Data: []byte(data)},
		Services: services,
	}
}

// itemsOf returns the items of entries, as the store should return them
// (Seq aside).
func itemsOf(entries ...store.Entry) []store.Item {
	out := make([]store.Item, len(entries))
	for i, e := range entries {
		out[i] = e.Item
	}
	return out
}

// describe renders items for a failure message.
func describe(items []store.Item) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		data := it.Data
		const most = 48
		cut := ""
		if len(data) > most {
			data, cut = data[:most], fmt.Sprintf("...(%d bytes)", len(it.Data))
		}
		b.WriteByte('{')
		if it.Seq != 0 {
			fmt.Fprintf(&b, "Seq:%d ", it.Seq)
		}
		fmt.Fprintf(&b, "Kind:%d Key:%q Data:%q%s}", it.Kind, it.Key, data, cut)
	}
	b.WriteByte(']')
	return b.String()
}

// sameItem reports whether got is want as appended: same Kind, Key and
// Data. Seq is the store's to assign.
func sameItem(got, want store.Item) bool {
	return got.Kind == want.Kind && got.Key == want.Key && bytes.Equal(got.Data, want.Data)
}

// checkItems fails t unless got holds exactly want (by Kind, Key and Data),
// in that order, with strictly increasing Seq.
func checkItems(t *testing.T, what string, got []store.Item, want ...store.Item) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = sameItem(got[i], want[i])
	}
	if !ok {
		t.Errorf("%s: got items %s, want %s", what, describe(got), describe(want))
	}
	checkSeq(t, what, got)
}

// checkSeq fails t unless the Seq of items strictly increases.
func checkSeq(t *testing.T, what string, items []store.Item) {
	t.Helper()
	for i := 1; i < len(items); i++ {
		if items[i].Seq <= items[i-1].Seq {
			t.Errorf("%s: item %d (key %q) has Seq %d after Seq %d, want Seq strictly increasing",
				what, i, items[i].Key, items[i].Seq, items[i-1].Seq)
		}
	}
}

// checkTxn fails t unless got is want: same Service, ID, Format, Hash and
// items (Seq included), and Created within clockSlack of want's.
func checkTxn(t *testing.T, what string, got, want store.Txn) {
	t.Helper()
	if got.Service != want.Service || got.ID != want.ID || got.Format != want.Format {
		t.Errorf("%s: got txn {Service:%q ID:%d Format:%d}, want {Service:%q ID:%d Format:%d}",
			what, got.Service, got.ID, got.Format, want.Service, want.ID, want.Format)
	}
	if !bytes.Equal(got.Hash, want.Hash) {
		t.Errorf("%s: txn %d: got Hash %x, want %x", what, want.ID, got.Hash, want.Hash)
	}
	ok := len(got.Items) == len(want.Items)
	for i := 0; ok && i < len(got.Items); i++ {
		ok = got.Items[i].Seq == want.Items[i].Seq && sameItem(got.Items[i], want.Items[i])
	}
	if !ok {
		t.Errorf("%s: txn %d: got items %s, want %s", what, want.ID, describe(got.Items), describe(want.Items))
	}
	if d := got.Created.Sub(want.Created).Abs(); d > clockSlack {
		t.Errorf("%s: txn %d: got Created %v, want %v (within %v)", what, want.ID, got.Created, want.Created, clockSlack)
	}
}

// checkTxns fails t unless got is want, transaction by transaction.
func checkTxns(t *testing.T, what string, got []store.Txn, want ...store.Txn) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d txns with IDs %v, want %d with IDs %v", what, len(got), txnIDs(got), len(want), txnIDs(want))
		return
	}
	for i := range got {
		checkTxn(t, fmt.Sprintf("%s: txn %d of %d", what, i+1, len(got)), got[i], want[i])
	}
}

// txnIDs returns the IDs of txns.
func txnIDs(txns []store.Txn) []int64 {
	ids := make([]int64, len(txns))
	for i, tx := range txns {
		ids[i] = tx.ID
	}
	return ids
}

// checkErrIs fails t unless errors.Is(err, target).
func checkErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one matching %v", what, err, target)
	}
}

// mustAppend appends entries and fails t on error.
func mustAppend(t *testing.T, s store.Store, entries ...store.Entry) {
	t.Helper()
	if err := s.Append(t.Context(), entries); err != nil {
		t.Fatalf("Append of %d entries: got error %v, want nil", len(entries), err)
	}
}

// mustClaim claims service for owner with longTTL and fails t on error.
func mustClaim(t *testing.T, s store.Store, service, owner string) store.Epoch {
	t.Helper()
	return mustClaimFor(t, s, service, owner, longTTL)
}

// mustClaimFor claims service for owner with ttl and fails t on error.
func mustClaimFor(t *testing.T, s store.Store, service, owner string, ttl time.Duration) store.Epoch {
	t.Helper()
	e, err := s.Claim(t.Context(), service, owner, ttl)
	if err != nil {
		t.Fatalf("Claim(%q, owner %q, ttl %v): got error %v, want nil", service, owner, ttl, err)
	}
	return e
}

// claimWhenExpired claims service for owner, retrying while another owner's
// lease runs, until it succeeds or waitFor passes.
func claimWhenExpired(t *testing.T, s store.Store, service, owner string) store.Epoch {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		e, err := s.Claim(t.Context(), service, owner, longTTL)
		switch {
		case err == nil:
			return e
		case !errors.Is(err, store.ErrLeaseHeld):
			t.Fatalf("Claim(%q, owner %q) while waiting for the lease to expire: got error %v, want nil or ErrLeaseHeld", service, owner, err)
		case time.Now().After(deadline):
			t.Fatalf("Claim(%q, owner %q): still ErrLeaseHeld %v after a lease of %v", service, owner, waitFor, tinyTTL)
		}
		time.Sleep(time.Millisecond)
	}
}

// mustRelease releases the lease and fails t on error.
func mustRelease(t *testing.T, s store.Store, service string, epoch store.Epoch) {
	t.Helper()
	if err := s.Release(t.Context(), service, epoch); err != nil {
		t.Fatalf("Release(%q, epoch %d): got error %v, want nil", service, epoch, err)
	}
}

// nextTxn forms a transaction and fails t on error. It may return nil.
func nextTxn(t *testing.T, s store.Store, service string, epoch store.Epoch, lim store.Limits) *store.Txn {
	t.Helper()
	tx, err := s.NextTxn(t.Context(), service, epoch, format, lim)
	if err != nil {
		t.Fatalf("NextTxn(%q, epoch %d, %+v): got error %v, want nil", service, epoch, lim, err)
	}
	return tx
}

// mustNextTxn forms a transaction and fails t on error or when nothing was
// queued.
func mustNextTxn(t *testing.T, s store.Store, service string, epoch store.Epoch, lim store.Limits) *store.Txn {
	t.Helper()
	tx := nextTxn(t, s, service, epoch, lim)
	if tx == nil {
		t.Fatalf("NextTxn(%q, epoch %d, %+v): got nil, want a transaction", service, epoch, lim)
	}
	return tx
}

// checkNoTxn fails t unless NextTxn returns (nil, nil).
func checkNoTxn(t *testing.T, s store.Store, service string, epoch store.Epoch) {
	t.Helper()
	if tx := nextTxn(t, s, service, epoch, lots); tx != nil {
		t.Errorf("NextTxn(%q): got txn %d with items %s, want nil: nothing should be queued",
			service, tx.ID, describe(tx.Items))
	}
}

// mustComplete completes a transaction and fails t on error.
func mustComplete(t *testing.T, s store.Store, service string, epoch store.Epoch, id int64) {
	t.Helper()
	if err := s.Complete(t.Context(), service, epoch, id); err != nil {
		t.Fatalf("Complete(%q, epoch %d, id %d): got error %v, want nil", service, epoch, id, err)
	}
}

// mustPurge purges a service and fails t on error.
func mustPurge(t *testing.T, s store.Store, service string, epoch store.Epoch) {
	t.Helper()
	if err := s.Purge(t.Context(), service, epoch); err != nil {
		t.Fatalf("Purge(%q, epoch %d): got error %v, want nil", service, epoch, err)
	}
}

// mustTxns lists stored transactions and fails t on error.
func mustTxns(t *testing.T, s store.Store, service string, limit int) []store.Txn {
	t.Helper()
	txns, err := s.Txns(t.Context(), service, limit)
	if err != nil {
		t.Fatalf("Txns(%q, %d): got error %v, want nil", service, limit, err)
	}
	return txns
}

// mustBacklogs lists backlogs and fails t on error.
func mustBacklogs(t *testing.T, s store.Store) []store.Backlog {
	t.Helper()
	bl, err := s.Backlogs(t.Context())
	if err != nil {
		t.Fatalf("Backlogs: got error %v, want nil", err)
	}
	return bl
}

// backlog returns a Backlog for a wanted service with its counts; Oldest is
// not compared by checkBacklogs.
func backlog(service string, txns, queued int) store.Backlog {
	return store.Backlog{Service: service, Txns: txns, Queued: queued}
}

// describeBacklogs renders backlogs for a failure message.
func describeBacklogs(bl []store.Backlog) string {
	parts := make([]string, len(bl))
	for i, b := range bl {
		parts[i] = fmt.Sprintf("{%q Txns:%d Queued:%d}", b.Service, b.Txns, b.Queued)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkBacklogs fails t unless Backlogs reports exactly want (Service, Txns
// and Queued, in that order), each with a non-zero Oldest.
func checkBacklogs(t *testing.T, what string, s store.Store, want ...store.Backlog) {
	t.Helper()
	got := mustBacklogs(t, s)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Service == want[i].Service && got[i].Txns == want[i].Txns && got[i].Queued == want[i].Queued
	}
	if !ok {
		t.Errorf("%s: got Backlogs %s, want %s", what, describeBacklogs(got), describeBacklogs(want))
	}
	for _, b := range got {
		if b.Oldest.IsZero() {
			t.Errorf("%s: Backlogs: service %q has a zero Oldest, want the append time of its oldest pending item", what, b.Service)
		}
	}
}

// drain forms and completes transactions of service until none is left and
// returns their items in order.
func drain(t *testing.T, s store.Store, service string, epoch store.Epoch) []store.Item {
	t.Helper()
	var items []store.Item
	for {
		tx := nextTxn(t, s, service, epoch, lots)
		if tx == nil {
			return items
		}
		items = append(items, tx.Items...)
		mustComplete(t, s, service, epoch, tx.ID)
	}
}

// maxID returns the highest ID among txns, or 0.
func maxID(txns ...*store.Txn) int64 {
	var m int64
	for _, tx := range txns {
		m = max(m, tx.ID)
	}
	return m
}
