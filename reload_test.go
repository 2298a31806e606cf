package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// TestUpdateServicesAddsRemovesAndChanges: a new service starts at once, a
// removed one stops and keeps its backlog as UNCONFIGURED until purged, and
// a changed URL applies to the next PUT.
func TestUpdateServicesAddsRemovesAndChanges(t *testing.T) {
	ctx := context.Background()
	asA, asA2, asB, asC := astest.New(t, "tok"), astest.New(t, "tok"), astest.New(t, "tok"), astest.New(t, "tok")
	asB.Down()
	cfg := testConfig(t, reg("a", asA, "@a_.*"), reg("b", asB, "@b_.*"))
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(ctx, event("$a1", "!r", "@a_x"), event("$b1", "!r", "@b_x")))
	waitDelivered(t, asA, 1)
	waitDown(t, s, "b")

	require.NoError(t, s.UpdateServices(ctx, []*Registration{reg("a", asA2, "@a_.*"), reg("c", asC, "@c_.*")}))
	require.NoError(t, s.Enqueue(ctx, event("$a2", "!r", "@a_x"), event("$b2", "!r", "@b_x"), event("$c1", "!r", "@c_x")))
	waitDelivered(t, asA2, 1)
	waitDelivered(t, asC, 1)
	assert.Equal(t, []string{"$a1"}, asA.Delivered(), "the old URL gets nothing more")
	assert.Equal(t, []string{"$a2"}, asA2.Delivered())
	assert.Equal(t, []string{"$c1"}, asC.Delivered())

	st, err := s.Status(ctx, "b")
	require.NoError(t, err)
	assert.Equal(t, StateUnconfigured, st.State)
	assert.Equal(t, 1, st.StoredTxns+st.QueuedEvents, "the removed service's backlog is kept, and nothing new is routed to it")
	require.NoError(t, s.Purge(ctx, "b"))
	_, err = s.Status(ctx, "b")
	require.ErrorIs(t, err, ErrUnknownService)

	// Invalid lists change nothing.
	require.ErrorIs(t, s.UpdateServices(ctx, []*Registration{reg("a", asA2, "@a_.*"), reg("a", asC, "@c_.*")}), ErrInvalidRegistration)
	require.NoError(t, s.Enqueue(ctx, event("$c2", "!r", "@c_x")))
	waitDelivered(t, asC, 2)
}

// TestUpdateServicesUnderConcurrentEnqueue: while producers enqueue, the
// list changes back and forth; a service configured throughout receives
// every event, in order, and one that comes and goes receives, once each,
// what was routed to it, nothing lost.
func TestUpdateServicesUnderConcurrentEnqueue(t *testing.T) {
	ctx := context.Background()
	asA, asB := astest.New(t, "tok"), astest.New(t, "tok")
	cfg := testConfig(t, reg("a", asA, "@a_.*"))
	cfg.PollInterval = 10 * time.Millisecond // finds what a re-added service was owed
	s := start(t, cfg)
	withB := []*Registration{reg("a", asA, "@a_.*"), reg("b", asB, "@b_.*")}
	withoutB := []*Registration{reg("a", asA, "@a_.*")}

	const producers, calls = 4, 50
	var want []string
	for p := range producers {
		for i := range calls {
			want = append(want, fmt.Sprintf("$%d-%d", p, i))
		}
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range calls {
				id := fmt.Sprintf("$%d-%d", p, i)
				assert.NoError(t, s.Enqueue(ctx, event(id, "!r", "@a_x"), event(id+"b", "!r", "@b_x")))
			}
		})
	}
	for i := range 20 {
		regs := withB
		if i%2 == 1 {
			regs = withoutB
		}
		require.NoError(t, s.UpdateServices(ctx, regs))
	}
	wg.Wait()
	require.NoError(t, s.UpdateServices(ctx, withB)) // b back: it is owed what was routed to it
	waitDelivered(t, asA, len(want))
	assert.ElementsMatch(t, want, asA.Delivered())
	last := map[string]int{} // producer → its last call index seen
	for _, id := range asA.Delivered() {
		var p, i int
		_, err := fmt.Sscanf(id, "$%d-%d", &p, &i)
		require.NoError(t, err)
		prev, seen := last[fmt.Sprint(p)]
		assert.True(t, !seen || i > prev, "producer %d's calls out of order at %s", p, id)
		last[fmt.Sprint(p)] = i
	}
	for _, id := range want {
		assert.Equal(t, 1, asA.Deliveries(id), id)
	}
	waitFor(t, "b to drain", func() bool {
		st, err := s.Status(ctx, "b")
		return err == nil && st.StoredTxns == 0 && st.QueuedEvents == 0
	})
	for _, id := range asB.Delivered() {
		assert.Equal(t, 1, asB.Deliveries(id), id)
	}
	assert.Empty(t, asB.Problems())
}
