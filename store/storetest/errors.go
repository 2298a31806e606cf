package storetest

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// call is one store method call whose error a test checks.
type call struct {
	name string
	do   func(ctx context.Context) error
}

// everyMethod returns one call of each Store method. Each would succeed and
// change the store, were it not for the condition the test sets up: service
// "a" holds queued items, stored transaction txnID and a lease of epoch e,
// and service "b" is free.
func everyMethod(s store.Store, e store.Epoch, txnID int64) []call {
	return []call{
		{"Append", func(ctx context.Context) error {
			return s.Append(ctx, []store.Entry{entry("$new", "new", "a"), entry("$new", "new", "b")})
		}},
		{"Claim of a free service", func(ctx context.Context) error {
			_, err := s.Claim(ctx, "b", "intruder", longTTL)
			return err
		}},
		{"Claim by the holder", func(ctx context.Context) error {
			_, err := s.Claim(ctx, "a", "owner", longTTL)
			return err
		}},
		{"Release", func(ctx context.Context) error { return s.Release(ctx, "a", e) }},
		{"NextTxn", func(ctx context.Context) error {
			_, err := s.NextTxn(ctx, "a", e, format, lots)
			return err
		}},
		{"Txns", func(ctx context.Context) error {
			_, err := s.Txns(ctx, "a", 0)
			return err
		}},
		{"Complete", func(ctx context.Context) error { return s.Complete(ctx, "a", e, txnID) }},
		{"Backlogs", func(ctx context.Context) error {
			_, err := s.Backlogs(ctx)
			return err
		}},
		{"Purge", func(ctx context.Context) error { return s.Purge(ctx, "a", e) }},
	}
}

// testCanceledContext: every method called with a canceled context fails
// with an error matching context.Canceled and changes nothing.
func testCanceledContext(t *testing.T, s store.Store) {
	entries := numbered("n", 3, "a")
	mustAppend(t, s, entries...)
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	oldest := oldestOf(t, s, "a")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, c := range everyMethod(s, e, tx.ID) {
		checkErrIs(t, c.name+" with a canceled context", c.do(ctx), context.Canceled)
	}

	checkBacklogs(t, "after calls with a canceled context", s, backlog("a", 1, 2))
	if got := oldestOf(t, s, "a"); !got.Equal(oldest) {
		t.Errorf("Oldest of a after calls with a canceled context: got %v, want %v", got, oldest)
	}
	checkTxns(t, "Txns after calls with a canceled context", mustTxns(t, s, "a", 0), *tx)
	checkHeld(t, "a after calls with a canceled context", s, "a", "intruder")
	if got := mustClaim(t, s, "a", "owner"); got != e {
		t.Errorf("Claim by the holder after calls with a canceled context: got epoch %d, want %d", got, e)
	}
	mustClaim(t, s, "b", "someone") // b was not granted to the intruder
	checkItems(t, "items still queued for a", drain(t, s, "a", e), itemsOf(entries[1:]...)...)
}

// testInvalidArguments: arguments that break a method's preconditions fail
// with an error matching ErrInvalid and change nothing.
func testInvalidArguments(t *testing.T, s store.Store) {
	e := mustClaim(t, s, "a", "owner")
	ctx := t.Context()
	appendOne := func(en store.Entry) func() error {
		return func() error { return s.Append(ctx, []store.Entry{entry("$ok", "valid", "a"), en}) }
	}
	nextTxn := func(service string, lim store.Limits) func() error {
		return func() error {
			_, err := s.NextTxn(ctx, service, e, format, lim)
			return err
		}
	}
	claim := func(service, owner string, ttl time.Duration) func() error {
		return func() error {
			_, err := s.Claim(ctx, service, owner, ttl)
			return err
		}
	}
	noData := entry("$1", "", "a")
	noData.Data = nil
	for _, c := range []struct {
		name string
		do   func() error
	}{
		{"Append of an entry with nil Services", appendOne(entry("$1", "one"))},
		{"Append of an entry with empty Services", appendOne(entry("$1", "one", []string{}...))},
		{"Append of an entry with an empty service ID", appendOne(entry("$1", "one", ""))},
		{"Append of an entry with nil Data", appendOne(noData)},
		{"Append of an entry with empty Data", appendOne(entry("$1", "", "a"))},
		{"Claim of an empty service ID", claim("", "owner", longTTL)},
		{"Claim by an empty owner", claim("b", "", longTTL)},
		{"Claim with a zero ttl", claim("b", "owner", 0)},
		{"Claim with a negative ttl", claim("b", "owner", -time.Second)},
		{"Release of an empty service ID", func() error { return s.Release(ctx, "", e) }},
		{"NextTxn of an empty service ID", nextTxn("", lots)},
		{"NextTxn with zero MaxItems", nextTxn("a", store.Limits{MaxItems: 0, MaxBytes: 1 << 20})},
		{"NextTxn with negative MaxItems", nextTxn("a", store.Limits{MaxItems: -1, MaxBytes: 1 << 20})},
		{"NextTxn with zero MaxBytes", nextTxn("a", store.Limits{MaxItems: 10, MaxBytes: 0})},
		{"NextTxn with negative MaxBytes", nextTxn("a", store.Limits{MaxItems: 10, MaxBytes: -1})},
		{"Txns of an empty service ID", func() error {
			_, err := s.Txns(ctx, "", 0)
			return err
		}},
		{"Complete of an empty service ID", func() error { return s.Complete(ctx, "", e, 1) }},
		{"Purge of an empty service ID", func() error { return s.Purge(ctx, "", e) }},
	} {
		checkErrIs(t, c.name, c.do(), store.ErrInvalid)
	}
	checkBacklogs(t, "after invalid calls", s)
	mustClaim(t, s, "b", "someone") // no invalid Claim took b
	mustAppend(t, s, entry("$1", "one", "a"))
	checkItems(t, "items for a after invalid calls", drain(t, s, "a", e), entry("$1", "one", "a").Item)
}

// testClosed: once closed, a store that implements io.Closer fails every
// method with ErrClosed.
func testClosed(t *testing.T, s store.Store) {
	c, ok := s.(io.Closer)
	if !ok {
		t.Skipf("store %T does not implement io.Closer", s)
	}
	mustAppend(t, s, numbered("n", 3, "a")...)
	e := mustClaim(t, s, "a", "owner")
	tx := mustNextTxn(t, s, "a", e, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	if err := c.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	for _, c := range everyMethod(s, e, tx.ID) {
		checkErrIs(t, fmt.Sprintf("%s after Close", c.name), c.do(t.Context()), store.ErrClosed)
	}
}
