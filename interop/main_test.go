package interop

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine these tests start — the scheduler's, the httptest
// servers', mautrix's EventProcessor loops and the goroutines it runs
// handlers in — is waited for before a test ends, so no ignore list is
// needed: mautrix's appservice package starts nothing on its own when its
// websocket mode and its own HTTP listener (AppService.Start) are not used.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
