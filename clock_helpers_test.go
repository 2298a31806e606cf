package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/internal/clock/clocktest"
)

// newFakeClock returns a fake clock for a test.
func newFakeClock() *clocktest.Fake {
	return clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// startWithClock creates and starts a Scheduler on a fake clock, which a
// goroutine moves to the next timer whenever at least minTimers are
// pending: with the poller's timer (PollInterval an hour in testConfig)
// and one deliverer's, 2 means "whenever the deliverer waits". The
// scheduler is stopped, and the driver ended, at cleanup.
func startWithClock(t *testing.T, cfg Config, minTimers int) (*Scheduler, *clocktest.Fake) {
	t.Helper()
	clk := newFakeClock()
	return startOnClock(t, cfg, clk, minTimers), clk
}

// startOnClock is startWithClock on a given fake clock, for tests whose
// Store reads the same clock.
func startOnClock(t *testing.T, cfg Config, clk *clocktest.Fake, minTimers int) *Scheduler {
	t.Helper()
	s, err := newScheduler(cfg, clk)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	var driver sync.WaitGroup
	driver.Go(func() {
		for clk.WaitForTimers(ctx, minTimers) == nil {
			clk.AdvanceToNext()
		}
	})
	t.Cleanup(func() {
		stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer stopCancel()
		_ = s.Stop(stopCtx)
		cancel()
		driver.Wait()
	})
	return s
}

// logRecorder is a slog.Handler that keeps every record, for tests that
// read what the scheduler logged and with which attributes.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// durations returns the value of attribute key, as a duration, of every
// record whose message is msg, in logging order.
func (h *logRecorder) durations(msg, key string) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []time.Duration
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value.Duration())
			}
			return true
		})
	}
	return out
}

// msgWaiting is what the Recoverer logs, with attribute "backoff", before
// each wait.
const msgWaiting = "application service is down; waiting before retrying"

// texts returns every record as its message followed by its attributes.
func (h *logRecorder) texts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.records))
	for _, r := range h.records {
		text := r.Message
		r.Attrs(func(a slog.Attr) bool {
			text += " " + a.String()
			return true
		})
		out = append(out, text)
	}
	return out
}

// count returns how many records have message msg.
func (h *logRecorder) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}
