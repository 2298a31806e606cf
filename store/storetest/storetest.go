// Package storetest is the conformance suite for store.Store
// implementations: one named subtest per statement of the documentation of
// package store (the Store interface, its methods and their sentinels).
//
// Every implementation runs Run from a test of its own, with a factory that
// returns a fresh, empty store for the subtest it is given and registers the
// store's cleanup on that subtest:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s := memory.New()
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// A durable implementation also runs RunReopen, which closes a store and
// opens it again on the same directory to check what must survive a restart.
//
// The suite imports only the standard library and package store, so an
// implementation outside this module inherits no dependency. Run it with
// -race: several subtests use the store from many goroutines at once. A few
// subtests wait for a lease to expire, polling with a deadline, so the suite
// takes a second or two.
package storetest

import (
	"fmt"
	"io"
	"testing"

	"github.com/asdeliver/scheduler/store"
)

// suiteCase is one behaviour checked on one fresh store.
type suiteCase struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// cases lists what Run checks, grouped by topic; each group lives in the file
// named after it.
var cases = []suiteCase{
	// append.go
	{"AppendThenNextTxnReturnsItemsInAppendOrder", testAppendOrder},
	{"AppendReturnsDataByteForByte", testDataRoundTrip},
	{"AppendCopiesData", testAppendCopiesData},
	{"AppendIsAtomic", testAppendAtomic},
	{"AppendSkipsKeyPendingFromEarlierCall", testDedupAcrossCalls},
	{"AppendSkipsKeyRepeatedWithinOneCall", testDedupWithinCall},
	{"AppendSkipsKeyBoundToStoredTxn", testDedupBoundKey},
	{"AppendDeduplicatesPerService", testDedupPerService},
	{"AppendDeduplicatesOnKindAndKey", testDedupKindAndKey},
	{"AppendRequeuesKeyAfterComplete", testDedupAfterComplete},
	{"AppendRequeuesKeyAfterPurge", testDedupAfterPurge},
	{"AppendNeverDeduplicatesEmptyKey", testEmptyKeyNotDeduplicated},
	{"ItemForTwoServicesStaysUntilBothComplete", testSharedItem},

	// txn.go
	{"NextTxnReturnsNilWhenNothingQueued", testNextTxnEmpty},
	{"NextTxnRespectsMaxItems", testMaxItems},
	{"NextTxnRespectsMaxBytes", testMaxBytes},
	{"NextTxnFirstItemAlwaysFits", testFirstItemFits},
	{"NextTxnTakesDisjointConsecutiveItems", testDisjointTxns},
	{"NextTxnNeverReturnsItemsBoundToStoredTxn", testBoundItemsNotReturned},
	{"NextTxnRecordsServiceFormatHashAndCreated", testTxnFields},
	{"TxnIDsStrictlyIncreasePerService", testIDsIncrease},
	{"TxnIDsIncreaseAfterEverythingCompleted", testIDsAfterComplete},
	{"TxnIDsIncreaseAfterPurge", testIDsAfterPurge},
	{"TxnIDsIncreasePerServiceWhenServicesInterleave", testIDsPerService},
	{"TxnsListsOldestFirstWithExactItems", testTxnsList},
	{"TxnsLimitReturnsOldest", testTxnsLimit},
	{"TxnsOfServiceWithoutTxnsIsEmpty", testTxnsEmpty},
	{"CompleteDeletesOnlyThatTxn", testComplete},
	{"CompleteUnknownIDIsNoOp", testCompleteUnknown},
	{"CompleteTwiceIsNoOp", testCompleteTwice},

	// kinds.go
	{"NextTxnStopsAtFirstItemOverItsKindLimit", testStopsAtKindLimit},
	{"NextTxnAppliesPerKindLimitsIndependently", testKindLimitsIndependent},
	{"NextTxnKeepsSeqOrderAcrossMixedKinds", testMixedKindsKeepSeqOrder},
	{"NextTxnRejectsKindLimitBelowOne", testInvalidKindLimit},

	// backlog.go
	{"BacklogsCountsTxnsAndQueued", testBacklogCounts},
	{"BacklogsOmitsServicesWithNothingPending", testBacklogsOmitIdle},
	{"BacklogsSortedByService", testBacklogsSorted},
	{"BacklogsOldestIsAppendTimeOfOldestPendingItem", testBacklogOldest},
	{"PurgeRemovesEverythingOfOneServiceOnly", testPurge},
	{"PurgeKeepsLease", testPurgeKeepsLease},

	// lease.go
	{"ClaimGrantsLeaseThatExcludesOtherOwners", testClaimExcludes},
	{"ClaimBySameOwnerKeepsEpoch", testReclaimKeepsEpoch},
	{"ClaimBeforeExpiryExtendsLease", testClaimExtends},
	{"ClaimAfterExpiryGrantsHigherEpoch", testClaimAfterExpiry},
	{"ExpiredEpochIsStaleOnceAnotherOwnerClaims", testExpiredEpochStale},
	{"ReleaseLetsAnotherOwnerClaimAtOnce", testReleaseThenClaim},
	{"ReleasedEpochIsStale", testReleasedEpochStale},
	{"EpochsAreNeverReused", testEpochsNotReused},
	{"EpochNeverGrantedIsStale", testUngrantedEpochStale},
	{"StaleEpochChangesNothing", testStaleChangesNothing},
	{"LeasesAreIndependentPerService", testLeasesPerService},
	{"ConcurrentClaimsGrantOneOwner", testConcurrentClaims},

	// errors.go
	{"CanceledContextFailsEveryMethodAndChangesNothing", testCanceledContext},
	{"InvalidArgumentsFailWithErrInvalid", testInvalidArguments},
	{"ClosedStoreFailsEveryMethodWithErrClosed", testClosed},

	// concurrent.go
	{"ConcurrentAppendsAreDeliveredOnceInOrder", testConcurrentDelivery},
	{"ConcurrentNextTxnCallsBindEachItemOnce", testConcurrentNextTxn},

	// ordered.go: only for a store with store.OrderedAppender
	{"CallsMadeAfterAnOrderedAppendSeeItsItems", testOrderedAppend},
}

// Run checks the store.Store contract on stores made by newStore, one fresh
// store per subtest. newStore receives the subtest's t: it must return an
// empty store that no other subtest uses, and register on t whatever cleanup
// the store needs (Close, removing files). It may call t.Fatal.
//
// A store that implements io.Closer is closed by the subtest that checks
// store.ErrClosed, and then again by the factory's cleanup: Close must
// tolerate a second call, or the cleanup must ignore its error.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("newStore returned a nil store")
			}
			c.fn(t, s)
		})
	}
}

// reopenCase is one durability check on one fresh directory.
type reopenCase struct {
	name string
	fn   func(t *testing.T, r *reopener)
}

// reopenCases lists what RunReopen checks; see reopen.go.
var reopenCases = []reopenCase{
	{"QueuedItemsSurviveReopen", testReopenQueued},
	{"StoredTxnSurvivesReopenUnchanged", testReopenTxn},
	{"CompletedAndPurgedWorkStaysGoneAfterReopen", testReopenCompleted},
	{"ItemForTwoServicesSurvivesReopenUntilBothComplete", testReopenShared},
	{"SeqKeepsIncreasingAcrossReopen", testReopenSeq},
	{"TxnIDsIncreaseAcrossReopenWithWorkPending", testReopenIDsPending},
	{"TxnIDsIncreaseAcrossReopenWithNothingPending", testReopenIDsIdle},
	{"TxnIDsIncreaseAcrossReopenAfterPurge", testReopenIDsPurged},
	{"EpochsIncreaseAcrossReopen", testReopenEpochs},
	{"EpochsIncreaseAcrossReopenWhenLeaseExpired", testReopenExpiredLease},
	{"DedupKeysStayPendingAcrossReopen", testReopenDedup},
}

// RunReopen checks that a durable store keeps its state across a restart.
// open must open the store that lives in directory dir, creating it when
// dir holds none; each subtest passes its own t.TempDir(). The suite opens
// a store, changes it, closes it with Close (the store must implement
// io.Closer), opens dir again and checks what it finds.
//
// The suite closes every store it opens, including the last one of each
// subtest. open need not register a cleanup; if it registers one that calls
// Close, Close must tolerate a second call.
//
// RunReopen checks durability only: run Run as well.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	t.Helper()
	for _, c := range reopenCases {
		t.Run(c.name, func(t *testing.T) {
			r := &reopener{t: t, dir: t.TempDir(), open: open}
			t.Cleanup(func() {
				if err := r.close(); err != nil {
					t.Error(err)
				}
			})
			r.reopen()
			c.fn(t, r)
		})
	}
}

// reopener holds the store a RunReopen subtest currently has open.
type reopener struct {
	t    *testing.T
	dir  string
	open func(t *testing.T, dir string) store.Store
	s    store.Store
}

// close closes the open store, if any.
func (r *reopener) close() error {
	if r.s == nil {
		return nil
	}
	s := r.s
	r.s = nil
	c, ok := s.(io.Closer)
	if !ok {
		return fmt.Errorf("store %T does not implement io.Closer: RunReopen needs to close it", s)
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("closing store in %s: got error %v, want nil", r.dir, err)
	}
	return nil
}

// reopen closes the open store, if any, and opens the directory again.
func (r *reopener) reopen() store.Store {
	r.t.Helper()
	if err := r.close(); err != nil {
		r.t.Fatal(err)
	}
	s := r.open(r.t, r.dir)
	if s == nil {
		r.t.Fatalf("open(%s) returned a nil store", r.dir)
	}
	if _, ok := s.(io.Closer); !ok {
		r.t.Fatalf("store %T does not implement io.Closer: RunReopen needs to close it", s)
	}
	r.s = s
	return s
}
