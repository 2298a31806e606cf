package wire

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// unixScheme starts the URL of an application service that listens on a
// Unix domain socket, as Dendrite accepts it: unix:///run/bridge.sock.
const unixScheme = "unix://"

// unixHost is the Host header of requests over a Unix socket, as curl
// sends it: the socket has no host name.
const unixHost = "localhost"

// UnixSocket returns the socket path of a unix:// URL, and whether url is
// one. The path is what follows "unix://": absolute, so the URL has three
// slashes.
func UnixSocket(url string) (string, bool) {
	path, ok := strings.CutPrefix(url, unixScheme)
	return path, ok
}

// unixDialer reaches the application services that listen on Unix sockets.
// Its transport pools connections by host, so every socket gets a host
// name of its own ("socket-1", ...), which its dialer maps back to the
// path.
type unixDialer struct {
	mu     sync.Mutex
	hosts  map[string]string // socket path → host name
	paths  map[string]string // host name → socket path
	client *http.Client
}

// newUnixDialer returns a dialer whose connections take at most
// connectTimeout to open.
func newUnixDialer(connectTimeout time.Duration) *unixDialer {
	u := &unixDialer{hosts: make(map[string]string), paths: make(map[string]string)}
	dialer := &net.Dialer{Timeout: connectTimeout}
	u.client = &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				u.mu.Lock()
				path, ok := u.paths[host]
				u.mu.Unlock()
				if !ok {
					return nil, fmt.Errorf("no Unix socket is known as %q", host)
				}
				return dialer.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost:    maxIdlePerHost,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: maxAnswer,
			DisableCompression:     true,
			WriteBufferSize:        writeBuffer,
		},
		CheckRedirect: noRedirect,
	}
	return u
}

// target returns the URL that reaches path on the socket, and registers
// the socket's host name on first use.
func (u *unixDialer) target(socket, path string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	host, ok := u.hosts[socket]
	if !ok {
		host = fmt.Sprintf("socket-%d", len(u.hosts)+1)
		u.hosts[socket], u.paths[host] = host, socket
	}
	return "http://" + host + path
}
