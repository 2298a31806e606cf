package interop

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// The homeserver's world: one bridged room where the AS's ghosts are
// members, one room the AS has no member in.
const (
	serverName   = "example.org"
	serviceID    = "interop"
	hsToken      = "interop-hs-token-3b7d9c21"
	botLocalpart = "interopbot"

	bot    = "@interopbot:example.org"     // the AS's own user
	ghost1 = "@interop_ghost1:example.org" // users namespace
	ghost2 = "@interop_ghost2:example.org"
	ghost3 = "@interop_ghost3:example.org"
	ghost4 = "@interop_ghost4:example.org"
	alice  = "@alice:example.org" // local, outside the namespace, in the bridged room
	carol  = "@carol:example.org" // local, outside the namespace, only in the other room

	bridgedRoom = "!bridged:example.org"
	otherRoom   = "!elsewhere:example.org"
)

// waitTimeout bounds every wait on a condition; the conditions are met in
// milliseconds when things work.
const waitTimeout = 15 * time.Second

// directory is the homeserver's room directory (Config.Rooms, with
// UserRooms): the AS gets the events of the bridged room because its ghosts
// are members, as a bridge's registration with only a users namespace
// expects.
type directory struct{}

var roomMembers = map[string][]string{
	bridgedRoom: {bot, ghost1, ghost2, ghost3, ghost4, alice},
	otherRoom:   {alice, carol},
}

func (directory) LocalAliases(context.Context, string) ([]string, error) { return nil, nil }

func (directory) LocalMembers(_ context.Context, roomID string) ([]string, error) {
	return roomMembers[roomID], nil
}

func (directory) JoinedRooms(_ context.Context, userID string) ([]string, error) {
	var rooms []string
	for _, room := range []string{bridgedRoom, otherRoom} {
		for _, member := range roomMembers[room] {
			if member == userID {
				rooms = append(rooms, room)
			}
		}
	}
	return rooms, nil
}

var (
	_ scheduler.RoomDirectory = directory{}
	_ scheduler.UserRooms     = directory{}
)

// ourRegistration writes mautrix's registration as the YAML file a mautrix
// bridge generates for the homeserver, and reads it as a homeserver using
// asdeliver would.
func (m *mautrixAS) ourRegistration() *scheduler.Registration {
	m.t.Helper()
	file, err := m.Reg.YAML()
	require.NoError(m.t, err)
	reg, err := scheduler.ParseRegistration([]byte(file))
	require.NoError(m.t, err, "registration file written by mautrix:\n%s", file)
	require.Equal(m.t, m.Reg.ID, reg.ID)
	require.Equal(m.t, m.Reg.URL, reg.URL)
	require.Equal(m.t, m.Reg.ServerToken, reg.HSToken)
	require.Equal(m.t, m.Reg.AppToken, reg.ASToken)
	require.True(m.t, reg.ReceiveEphemeral, "receive_ephemeral")
	require.True(m.t, reg.PushEphemeral, "de.sorunome.msc2409.push_ephemeral")
	require.True(m.t, reg.MSC3202, "org.matrix.msc3202")
	require.Len(m.t, reg.Namespaces.Users, 2)
	return reg
}

// homeserver is our scheduler with a SQLite store, as a homeserver embeds it.
type homeserver struct {
	*scheduler.Scheduler
	t    *testing.T
	logs *syncBuffer
	st   *sqlite.Store
	once sync.Once
}

// startHomeserver opens the SQLite store at dbPath (a new file in
// t.TempDir() when empty) and starts a scheduler delivering to reg.
// tweak, if not nil, changes the Config before New. It is stopped by
// t.Cleanup, or earlier by Stop.
func startHomeserver(t *testing.T, dbPath string, reg *scheduler.Registration, tweak func(*scheduler.Config)) *homeserver {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "asdeliver.db")
	}
	st, err := sqlite.Open(dbPath)
	require.NoError(t, err)
	h := &homeserver{t: t, logs: &syncBuffer{}, st: st}
	cfg := scheduler.Config{
		ServerName:   serverName,
		Services:     []*scheduler.Registration{reg},
		Store:        st,
		Rooms:        directory{},
		RetryInitial: 20 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		Logger:       slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := scheduler.New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	h.Scheduler = s
	t.Cleanup(h.Stop)
	return h
}

// Stop stops the scheduler and closes its store; calls after the first do
// nothing.
func (h *homeserver) Stop() {
	h.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(h.t, h.Scheduler.Stop(ctx))
		require.NoError(h.t, h.st.Close())
		if h.t.Failed() {
			h.t.Logf("scheduler log:\n%s", h.logs.String())
		}
	})
}

// status is Status for the test's service.
func (h *homeserver) status() scheduler.ServiceStatus {
	h.t.Helper()
	st, err := h.Status(context.Background(), serviceID)
	require.NoError(h.t, err)
	return st
}

// drained reports whether everything enqueued has been delivered and the
// service is UP.
func (h *homeserver) drained() bool {
	st := h.status()
	return st.State == scheduler.StateUp && st.StoredTxns == 0 && st.QueuedEvents == 0
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for the
// scheduler's logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", waitTimeout, what)
		}
		<-tick.C
	}
}

// deadline is a context for calls that should not outlive the test.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}
