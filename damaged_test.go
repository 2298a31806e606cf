package scheduler

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"

	"github.com/asdeliver/scheduler/store"
)

// TestDamagedStoredTransactionShowsInStatusAndLogsOnce: a stored
// transaction whose items no longer match their hash is never sent; the
// service shows DOWN with the reason and the way out, retries with
// backoff instead of flooding, and logs the ERROR once, not per retry.
func TestDamagedStoredTransactionShowsInStatusAndLogsOnce(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	as.Down()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	cfg.RetryInitial, cfg.RetryMax = 0, 0 // the defaults, on the fake clock
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	var damaged atomic.Bool
	inner := cfg.Store
	cfg.Store = &storeFunc{Store: inner, txns: func(ctx context.Context, svc string, limit int) ([]store.Txn, error) {
		txns, err := inner.Txns(ctx, svc, limit)
		if damaged.Load() {
			for i := range txns {
				it := &txns[i].Items[0]
				it.Data = append([]byte(nil), it.Data...)
				it.Data[len(it.Data)-2] = ' ' // what a bad disk might do
			}
		}
		return txns, err
	}}
	// The first PUT, of the transaction as formed, fails; every resend
	// reads it back damaged.
	damaged.Store(true)
	s, _ := startWithClock(t, cfg, 2)
	require.NoError(t, s.Enqueue(ctx, event("$1", "!r", "@a_x")))

	var st ServiceStatus
	waitFor(t, "three refused attempts", func() bool {
		var err error
		st, err = s.Status(ctx, "a")
		require.NoError(t, err)
		return st.ConsecutiveFailures >= 4 // the failed PUT and three refusals
	})
	assert.Equal(t, StateDown, st.State)
	assert.Contains(t, st.LastError, "fails its hash check")
	assert.Contains(t, st.LastError, "Scheduler.Purge")
	assert.Len(t, as.Requests(), 1, "the damaged transaction was not sent again")
	assert.Equal(t, 1, logs.count("stored transaction cannot be sent"), "logged once, not per retry")
	waits := logs.durations(msgWaiting, "backoff")
	require.GreaterOrEqual(t, len(waits), 3)
	assert.Less(t, waits[0], waits[2], "the retries back off")
}
