package scheduler

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnixSocketURLDelivers: a registration whose url is unix:///path, as
// Dendrite accepts it, is delivered to over that Unix domain socket, and
// a ping reaches it too.
func TestUnixSocketURLDelivers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bridge.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	var mu sync.Mutex
	var paths, hosts []string
	var bodies []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths, hosts, bodies = append(paths, r.Method+" "+r.URL.Path), append(hosts, r.Host), append(bodies, string(body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	yaml := []byte(`id: bridge
url: unix://` + sock + `
as_token: as-secret
hs_token: hs-secret
sender_localpart: bridgebot
namespaces:
  users: [{exclusive: true, regex: '@bridge_.*'}]
`)
	r, err := ParseRegistration(yaml)
	require.NoError(t, err)
	assert.Equal(t, "unix://"+sock, r.URL)
	cfg := testConfig(t, r)
	s := start(t, cfg)
	require.NoError(t, s.Enqueue(context.Background(), event("$1", "!r", "@bridge_x")))
	waitFor(t, "the transaction to arrive over the socket", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(paths) > 0
	})
	_, err = s.Ping(context.Background(), "bridge", "ping-1")
	require.NoError(t, err)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, paths, 2)
	assert.Regexp(t, `^PUT /_matrix/app/v1/transactions/\d+$`, paths[0])
	assert.Contains(t, bodies[0], `"event_id":"$1"`)
	assert.Equal(t, "POST /_matrix/app/v1/ping", paths[1])
	assert.Equal(t, []string{"localhost", "localhost"}, hosts)
}
