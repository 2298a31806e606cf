package scheduler

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"

	"github.com/asdeliver/scheduler/store/memory"
)

// TestLeaseOutlivesRetryWaitsLongerThanItsTTL: a retry wait longer than
// the lease must not let the lease lapse. It used to: the owner renewed
// only between sends, found its lease expired after the wait, logged a
// false "taken by another process" and restarted its backoff at its first
// step. Store and scheduler read one fake clock, so the test is exact.
func TestLeaseOutlivesRetryWaitsLongerThanItsTTL(t *testing.T) {
	as := astest.New(t, "tok")
	as.Down()
	clk := newFakeClock()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	st := memory.NewWithClock(clk.Now)
	t.Cleanup(func() { _ = st.Close() })
	cfg.Store = st
	cfg.LeaseTTL = 300 * time.Millisecond
	cfg.RetryInitial, cfg.RetryMax = 64*time.Millisecond, 1024*time.Millisecond
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	s := startOnClock(t, cfg, clk, 2)
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))

	ms := time.Millisecond
	want := []time.Duration{64 * ms, 128 * ms, 256 * ms, 512 * ms, 1024 * ms, 1024 * ms, 1024 * ms, 1024 * ms}
	waitFor(t, "eight waits", func() bool { return len(logs.durations(msgWaiting, "backoff")) >= len(want) })
	assert.Equal(t, want, logs.durations(msgWaiting, "backoff")[:len(want)], "the backoff went on doubling")
	assert.Zero(t, logs.count(msgLeaseLost), "the lease never lapsed")
}

// TestLeaseIsRenewedWhileAPUTHangs: a PUT that takes longer than the lease
// keeps it, and one that cannot renew it in time is cancelled, so that no
// other process can start sending while it is still in flight.
func TestLeaseIsRenewedWhileAPUTHangs(t *testing.T) {
	for _, renewFails := range []bool{false, true} {
		name := "renewed"
		if renewFails {
			name = "renewal fails"
		}
		t.Run(name, func(t *testing.T) {
			as := astest.New(t, "tok")
			as.Hang()
			clk := newFakeClock()
			cfg := testConfig(t, reg("a", as, "@a_.*"))
			st := memory.NewWithClock(clk.Now)
			t.Cleanup(func() { _ = st.Close() })
			fs := newFaultStore(st)
			cfg.Store = fs
			cfg.LeaseTTL = 300 * time.Millisecond
			logs := &logRecorder{}
			cfg.Logger = slog.New(logs)
			s := startOnClock(t, cfg, clk, 2)
			require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))
			waitArrived(t, as, 1)
			if renewFails {
				fs.set(errFaultIO, "Claim")
			}
			start := clk.Now()
			waitFor(t, "ten lease lifetimes", func() bool { return clk.Now().Sub(start) > 10*cfg.LeaseTTL })
			if !renewFails {
				as.Release()
				waitDelivered(t, as, 1)
				assert.Zero(t, logs.count(msgLeaseLost), "the lease never lapsed")
				return
			}
			waitFor(t, "the PUT to be cancelled", func() bool { return as.Stats().Failed == 1 })
			assert.Positive(t, logs.count(msgLeaseLost))
			fs.clear()
			as.Release()
			waitDelivered(t, as, 1)
		})
	}
}
