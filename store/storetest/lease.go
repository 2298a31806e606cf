package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// checkHeld fails t unless Claim by owner fails with store.ErrLeaseHeld.
func checkHeld(t *testing.T, what string, s store.Store, service, owner string) {
	t.Helper()
	e, err := s.Claim(t.Context(), service, owner, longTTL)
	if !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("%s: Claim(%q, owner %q): got (epoch %d, error %v), want ErrLeaseHeld", what, service, owner, e, err)
	}
}

// checkStale fails t unless NextTxn, Complete, Purge and Release of service
// with epoch all fail with store.ErrStaleEpoch. txnID is passed to Complete.
func checkStale(t *testing.T, what string, s store.Store, service string, epoch store.Epoch, txnID int64) {
	t.Helper()
	ctx := t.Context()
	tx, err := s.NextTxn(ctx, service, epoch, format, lots)
	checkErrIs(t, fmt.Sprintf("%s: NextTxn(%q, epoch %d)", what, service, epoch), err, store.ErrStaleEpoch)
	if tx != nil {
		t.Errorf("%s: NextTxn(%q, epoch %d): got txn %d, want nil", what, service, epoch, tx.ID)
	}
	err = s.Complete(ctx, service, epoch, txnID)
	checkErrIs(t, fmt.Sprintf("%s: Complete(%q, epoch %d, id %d)", what, service, epoch, txnID), err, store.ErrStaleEpoch)
	err = s.Purge(ctx, service, epoch)
	checkErrIs(t, fmt.Sprintf("%s: Purge(%q, epoch %d)", what, service, epoch), err, store.ErrStaleEpoch)
	err = s.Release(ctx, service, epoch)
	checkErrIs(t, fmt.Sprintf("%s: Release(%q, epoch %d)", what, service, epoch), err, store.ErrStaleEpoch)
}

// checkHigher fails t unless epoch later is greater than earlier.
func checkHigher(t *testing.T, what string, later, earlier store.Epoch) {
	t.Helper()
	if later <= earlier {
		t.Errorf("%s: got epoch %d after epoch %d, want a greater one", what, later, earlier)
	}
}

// testClaimExcludes: Claim grants a lease whose epoch works, and another
// owner's Claim fails with ErrLeaseHeld while it runs.
func testClaimExcludes(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a"))
	e := mustClaim(t, s, "a", "owner1")
	checkHeld(t, "while owner1 holds the lease", s, "a", "owner2")
	checkItems(t, "items for the lease holder", drain(t, s, "a", e), entry("$1", "one", "a").Item)
}

// testReclaimKeepsEpoch: the holder claiming again keeps its epoch, which
// stays usable.
func testReclaimKeepsEpoch(t *testing.T, s store.Store) {
	e1 := mustClaim(t, s, "a", "owner1")
	e2 := mustClaim(t, s, "a", "owner1")
	if e2 != e1 {
		t.Errorf("Claim by the holder: got epoch %d, want %d, the epoch it holds", e2, e1)
	}
	mustAppend(t, s, entry("$1", "one", "a"))
	checkItems(t, "items for the first epoch", drain(t, s, "a", e1), entry("$1", "one", "a").Item)
}

// testClaimExtends: a holder that claims again before expiry extends its
// lease by the new ttl.
func testClaimExtends(t *testing.T, s store.Store) {
	for ttl := 300 * time.Millisecond; ; ttl *= 2 {
		service := fmt.Sprintf("a-%v", ttl)
		start := time.Now()
		e1 := mustClaimFor(t, s, service, "owner1", ttl)
		e2 := mustClaimFor(t, s, service, "owner1", longTTL)
		if time.Since(start) > ttl/2 {
			// Too slow to be sure the second claim came before expiry.
			if ttl > waitFor {
				t.Fatalf("two Claims took %v, longer than half of a %v lease", time.Since(start), ttl)
			}
			continue
		}
		if e2 != e1 {
			t.Errorf("Claim by the holder before expiry: got epoch %d, want %d, the epoch it holds", e2, e1)
		}
		// The first term has surely ended once this sleep is over; a store
		// that did not extend the lease lets owner2 in.
		time.Sleep(time.Until(start.Add(ttl + 100*time.Millisecond)))
		checkHeld(t, "after the first term ended, the lease having been extended", s, service, "owner2")
		return
	}
}

// testClaimAfterExpiry: once a lease expires, another owner gets it, with a
// greater epoch.
func testClaimAfterExpiry(t *testing.T, s store.Store) {
	e1 := mustClaimFor(t, s, "a", "owner1", tinyTTL)
	e2 := claimWhenExpired(t, s, "a", "owner2")
	checkHigher(t, "Claim by owner2 after owner1's lease expired", e2, e1)
	checkHeld(t, "while owner2 holds the lease", s, "a", "owner1")
}

// testExpiredEpochStale: once another owner has claimed an expired lease,
// the old epoch fails with ErrStaleEpoch everywhere.
func testExpiredEpochStale(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a"), entry("$2", "two", "a"))
	setup := mustClaim(t, s, "a", "setup")
	tx := mustNextTxn(t, s, "a", setup, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	mustRelease(t, s, "a", setup)

	e1 := mustClaimFor(t, s, "a", "owner1", tinyTTL)
	e2 := claimWhenExpired(t, s, "a", "owner2")
	checkStale(t, "owner1's expired epoch", s, "a", e1, tx.ID)
	checkTxns(t, "Txns after stale calls", mustTxns(t, s, "a", 0), *tx)
	checkHeld(t, "after stale calls", s, "a", "owner3")
	checkItems(t, "items for owner2", drain(t, s, "a", e2), entry("$2", "two", "a").Item)
}

// testReleaseThenClaim: after Release, another owner claims at once and gets
// a greater epoch.
func testReleaseThenClaim(t *testing.T, s store.Store) {
	e1 := mustClaim(t, s, "a", "owner1")
	mustRelease(t, s, "a", e1)
	e2 := mustClaim(t, s, "a", "owner2")
	checkHigher(t, "Claim by owner2 right after owner1's Release", e2, e1)
}

// testReleasedEpochStale: a released lease has no current epoch: the
// released one fails with ErrStaleEpoch, before and after a new grant.
func testReleasedEpochStale(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a"), entry("$2", "two", "a"))
	e1 := mustClaim(t, s, "a", "owner1")
	tx := mustNextTxn(t, s, "a", e1, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	mustRelease(t, s, "a", e1)
	checkStale(t, "released epoch, lease free", s, "a", e1, tx.ID)
	mustClaim(t, s, "a", "owner1")
	checkStale(t, "released epoch, lease granted again", s, "a", e1, tx.ID)
}

// testEpochsNotReused: every grant to a new owner, after Release or expiry,
// and to the same owner after Release, gets a greater epoch than all before.
func testEpochsNotReused(t *testing.T, s store.Store) {
	e1 := mustClaim(t, s, "a", "owner1")
	mustRelease(t, s, "a", e1)
	e2 := mustClaim(t, s, "a", "owner1")
	checkHigher(t, "owner1 claiming again after its Release", e2, e1)
	mustRelease(t, s, "a", e2)
	e3 := mustClaimFor(t, s, "a", "owner2", tinyTTL)
	checkHigher(t, "owner2 claiming after owner1's Release", e3, e2)
	e4 := claimWhenExpired(t, s, "a", "owner1")
	checkHigher(t, "owner1 claiming after owner2's lease expired", e4, e3)
}

// testUngrantedEpochStale: an epoch never granted fails with ErrStaleEpoch,
// on a service never claimed and on one with a lease.
func testUngrantedEpochStale(t *testing.T, s store.Store) {
	mustAppend(t, s, entry("$1", "one", "a", "b"))
	for _, e := range []store.Epoch{0, 1, 12345, -1} {
		checkStale(t, "service never claimed", s, "a", e, 1)
	}
	e := mustClaim(t, s, "b", "owner")
	for _, other := range []store.Epoch{0, e + 1, e + 1000, -1} {
		checkStale(t, fmt.Sprintf("service with epoch %d granted", e), s, "b", other, 1)
	}
	checkBacklogs(t, "after calls with epochs never granted", s, backlog("a", 0, 1), backlog("b", 0, 1))
}

// testStaleChangesNothing: calls with a stale epoch change neither the
// queue, nor the stored transactions, nor the current lease.
func testStaleChangesNothing(t *testing.T, s store.Store) {
	entries := numbered("n", 3, "a")
	mustAppend(t, s, entries...)
	e1 := mustClaim(t, s, "a", "owner1")
	tx := mustNextTxn(t, s, "a", e1, store.Limits{MaxItems: 1, MaxBytes: 1 << 20})
	mustRelease(t, s, "a", e1)
	e2 := mustClaim(t, s, "a", "owner2")

	checkStale(t, "owner1's released epoch", s, "a", e1, tx.ID)

	checkTxns(t, "Txns after stale calls", mustTxns(t, s, "a", 0), *tx)
	checkBacklogs(t, "after stale calls", s, backlog("a", 1, 2))
	checkHeld(t, "after a stale Release", s, "a", "owner3")
	if got := mustClaim(t, s, "a", "owner2"); got != e2 {
		t.Errorf("Claim by owner2 after stale calls: got epoch %d, want %d", got, e2)
	}
	checkItems(t, "items still queued", drain(t, s, "a", e2), itemsOf(entries[1:]...)...)
}

// testLeasesPerService: a lease covers one service only.
func testLeasesPerService(t *testing.T, s store.Store) {
	ea := mustClaim(t, s, "a", "owner1")
	mustClaim(t, s, "b", "owner2")
	checkHeld(t, "b held by owner2", s, "b", "owner1")
	mustRelease(t, s, "a", ea)
	checkHeld(t, "b held by owner2 after a was released", s, "b", "owner3")
}

// testConcurrentClaims: of many owners claiming a free service at once,
// exactly one gets the lease.
func testConcurrentClaims(t *testing.T, s store.Store) {
	const owners = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
		epoch   store.Epoch
	)
	for i := range owners {
		wg.Go(func() {
			owner := fmt.Sprintf("owner%d", i)
			e, err := s.Claim(t.Context(), "a", owner, longTTL)
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, owner)
				epoch = e
				mu.Unlock()
			case !errors.Is(err, store.ErrLeaseHeld):
				t.Errorf("Claim by %s: got error %v, want nil or ErrLeaseHeld", owner, err)
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d concurrent Claims: got %d owners granted %v, want exactly 1", owners, len(winners), winners)
	}
	mustAppend(t, s, entry("$1", "one", "a"))
	checkItems(t, "items for the winner", drain(t, s, "a", epoch), entry("$1", "one", "a").Item)
}
