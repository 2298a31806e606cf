package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
)

func TestCommitsOverlapUpToTheLimitAndKeepEveryEvent(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		testCommitsOverlap(t, defaultCommitsInFlight, func(st store.Store) store.Store { return st })
	})
	t.Run("store says 2", func(t *testing.T) {
		testCommitsOverlap(t, 2, func(st store.Store) store.Store { return appendsInFlight{st, 2} })
	})
}

// appendsInFlight is a Store with store.AppendConcurrency.
type appendsInFlight struct {
	store.Store
	n int
}

func (a appendsInFlight) AppendsInFlight() int { return a.n }

// testCommitsOverlap enqueues limit+2 calls while every commit hangs, on
// the store that wrap returns, and checks that limit commits are in
// flight and the other calls wait, together, for a slot.
func testCommitsOverlap(t *testing.T, limit int, wrap func(store.Store) store.Store) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	gate := make(chan struct{})
	var inFlight, most atomic.Int32
	inner := cfg.Store
	cfg.Store = wrap(&storeFunc{Store: inner, append: func(ctx context.Context, e []store.Entry) error {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-gate // the disk is slow
		defer inFlight.Add(-1)
		return inner.Append(ctx, e)
	}})
	s := start(t, cfg)
	// Opened at the latest when t ends, before Stop waits for the commits.
	openGate := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(openGate)

	calls := limit + 2
	errs := make(chan error, calls)
	var want []string
	for i := range calls {
		want = append(want, fmt.Sprintf("$%d", i))
		go func() { errs <- s.Enqueue(context.Background(), event(fmt.Sprintf("$%d", i), "!r", "@a_x")) }()
		if i < limit {
			// Each call gets a commit of its own while there are free
			// slots: wait until it has begun.
			waitFor(t, "commit begun", func() bool { return inFlight.Load() == int32(i+1) })
		}
	}
	// The last calls wait for a free slot, together.
	waitFor(t, "the last calls admitted", func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		return len(s.pool.pending) == 2
	})
	assert.Equal(t, int32(limit), inFlight.Load())
	openGate()
	for range calls {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, int32(limit), most.Load(), "never more commits in flight than the limit")
	waitDelivered(t, as, calls)
	assert.ElementsMatch(t, want, as.Delivered())
}

// orderedStore is a Store with store.OrderedAppender: its Append stores the
// entries, calls queued, then holds the call (the commit and its sync, in
// a real store) until a transaction has been formed or a second passed.
type orderedStore struct {
	store.Store
	mu     sync.Mutex
	formed chan struct{} // closed by the first NextTxn that forms one
}

var errNoTxnFormed = errors.New("no transaction formed while the append was held")

func (o *orderedStore) AppendOrdered(ctx context.Context, entries []store.Entry, queued func()) error {
	if err := o.Store.Append(ctx, entries); err != nil {
		return err
	}
	o.mu.Lock()
	formed := make(chan struct{})
	o.formed = formed
	o.mu.Unlock()
	queued()
	select {
	case <-formed:
		return nil
	case <-time.After(time.Second):
		return errNoTxnFormed
	}
}

func (o *orderedStore) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	txn, err := o.Store.NextTxn(ctx, service, epoch, format, lim)
	if txn != nil {
		o.mu.Lock()
		if o.formed != nil {
			close(o.formed)
			o.formed = nil
		}
		o.mu.Unlock()
	}
	return txn, err
}

func TestIdleServiceFormsItsTransactionBeforeTheAppendReturns(t *testing.T) {
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.Store = &orderedStore{Store: cfg.Store}
	s := start(t, cfg)
	ctx := context.Background()
	for i := range 3 {
		// The owner is woken when the store orders the call, not when it
		// returns: it forms the transaction while the Append is held.
		require.NoError(t, s.Enqueue(ctx, event(fmt.Sprintf("$%d", i), "!r", "@a_x")))
		waitDelivered(t, as, i+1)
	}
	assert.Equal(t, []string{"$0", "$1", "$2"}, as.Delivered())
}
