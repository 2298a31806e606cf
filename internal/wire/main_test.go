package wire

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: a
// server, a connection or a timer left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
