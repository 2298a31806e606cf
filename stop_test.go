package scheduler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/astest"
)

// TestEveryConcurrentStopWaitsUntilStopped: a caller that stops from two
// places (a signal handler and a deferred cleanup) must not see either
// Stop return while a PUT is still in flight, as http.Server.Shutdown
// callers expect.
func TestEveryConcurrentStopWaitsUntilStopped(t *testing.T) {
	as := astest.New(t, "tok")
	as.Hang()
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	before := goleak.IgnoreCurrent()
	s, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@a_x")))
	waitArrived(t, as, 1) // a PUT is in flight and hangs

	var released atomic.Bool
	var stops sync.WaitGroup
	for range 3 {
		stops.Go(func() {
			assert.NoError(t, s.Stop(context.Background()))
			assert.True(t, released.Load(), "a Stop returned while the PUT was in flight")
		})
	}
	time.Sleep(50 * time.Millisecond) // give an early return the chance to show
	released.Store(true)
	as.Release()
	stops.Wait()
	goleak.VerifyNone(t, before)
}
