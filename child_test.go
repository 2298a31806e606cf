package scheduler

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Helpers of the tests that run schedulers in child processes (the crash
// torture, the PostgreSQL chaos tests and benchmarks). They are exported
// for crash_test.go, which is of package scheduler_test; the rest of the
// harness, which each test reads its own way, stays with the test.

// ChildCmd returns the command that runs this test binary again, in a
// child process, for the test function named test alone, with spec as
// JSON in the environment variable env: the child test reads it there
// and skips when it is unset. A child that hangs ends after timeout, even
// if its parent is gone.
func ChildCmd(t testing.TB, test, env string, timeout time.Duration, spec any) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatalf("encoding the spec of a child process: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout="+timeout.String())
	cmd.Env = append(os.Environ(), env+"="+string(raw))
	return cmd
}

// TagTransport sets Header to Value on every request it sends through
// Base, so that a test's application services know which process sent
// each request.
type TagTransport struct {
	Header, Value string
	Base          http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t TagTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(t.Header, t.Value)
	return t.Base.RoundTrip(r)
}

// ChildSpec reads into spec, in a child test, what ChildCmd put in env.
// When env is unset, the test runs on its own, as part of the package's
// tests: it skips t, saying it is the child of parent.
func ChildSpec(t *testing.T, env, parent string, spec any) {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		t.Skipf("a child process of %s: runs only when started by it", parent)
	}
	if err := json.Unmarshal([]byte(raw), spec); err != nil {
		t.Fatalf("decoding the spec in %s: %v", env, err)
	}
}
