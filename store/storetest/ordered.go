package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/asdeliver/scheduler/store"
)

// testOrderedAppend: for a store with store.OrderedAppender, queued runs
// once, before AppendOrdered returns, and a NextTxn made after queued has
// returned sees the appended items, in the same commit or a later one.
// Stores without the interface skip it.
func testOrderedAppend(t *testing.T, s store.Store) {
	oa, ok := s.(store.OrderedAppender)
	if !ok {
		t.Skip("the store does not implement store.OrderedAppender")
	}
	e := mustClaim(t, s, "a", "owner")
	entries := []store.Entry{entry("$1", `{"n":1}`, "a"), entry("$2", `{"n":2}`, "a")}
	ordered := make(chan struct{})
	type formed struct {
		txn *store.Txn
		err error
	}
	next := make(chan formed, 1)
	go func() {
		<-ordered
		txn, err := s.NextTxn(context.Background(), "a", e, 1, lots)
		next <- formed{txn, err}
	}()
	calls := 0
	closeOrdered := sync.OnceFunc(func() { close(ordered) })
	err := oa.AppendOrdered(context.Background(), entries, func() {
		calls++
		closeOrdered() // a second call is reported below, not a panic
	})
	if err != nil {
		t.Fatalf("AppendOrdered: %v", err)
	}
	if calls != 1 {
		t.Fatalf("AppendOrdered called queued %d times, want once before it returned", calls)
	}
	f := <-next
	if f.err != nil {
		t.Fatalf("NextTxn made after queued: %v", f.err)
	}
	if f.txn == nil {
		t.Fatal("NextTxn made after queued found nothing: it ran before the Append")
	}
	checkItems(t, "NextTxn made after queued", f.txn.Items, itemsOf(entries...)...)
}
