package scheduler

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// roomsOnly is a RoomDirectory without UserRooms.
type roomsOnly struct{}

func (roomsOnly) LocalAliases(context.Context, string) ([]string, error) { return nil, nil }
func (roomsOnly) LocalMembers(context.Context, string) ([]string, error) { return nil, nil }

// roomsAndUsers is a RoomDirectory with UserRooms.
type roomsAndUsers struct{ roomsOnly }

func (roomsAndUsers) JoinedRooms(context.Context, string) ([]string, error) { return nil, nil }

// TestNewWarnsOfMissingRoomHooks: New logs a WARN naming the services
// whose interest needs Config.Rooms (a users or aliases namespace) or
// UserRooms (ephemeral or MSC3202 opt-ins) when the hook is missing, and
// nothing when it is there or no service needs it.
func TestNewWarnsOfMissingRoomHooks(t *testing.T) {
	as := astest.New(t, "tok")
	plain := reg("plain", as, "@p_.*")
	ephemeral := reg("eph", as, "@e_.*")
	ephemeral.ReceiveEphemeral = true
	roomsNS := &Registration{ID: "rooms", URL: as.URL(), ASToken: "as-rooms", HSToken: "tok", SenderLocalpart: "rbot",
		Namespaces: Namespaces{Rooms: []Namespace{{Regex: "!r.*"}}}}
	noURL := reg("nourl", as, "@n_.*")
	noURL.URL = ""

	warnings := func(rooms RoomDirectory, regs ...*Registration) []string {
		logs := &logRecorder{}
		cfg := testConfig(t, regs...)
		cfg.Logger = slog.New(logs)
		cfg.Rooms = rooms
		_, err := New(cfg)
		require.NoError(t, err)
		var out []string
		for _, line := range logs.texts() {
			if strings.Contains(line, "Config.Rooms") {
				out = append(out, line)
			}
		}
		return out
	}

	got := warnings(nil, plain, roomsNS, noURL)
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "Config.Rooms is nil")
	assert.Contains(t, got[0], "plain")
	assert.NotContains(t, got[0], "rooms]", "a rooms namespace needs no directory")
	assert.NotContains(t, got[0], "nourl", "url: null receives nothing")

	got = warnings(roomsOnly{}, plain, ephemeral)
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "does not implement UserRooms")
	assert.Contains(t, got[0], "eph")

	assert.Len(t, warnings(nil, plain, ephemeral), 2)
	assert.Empty(t, warnings(roomsAndUsers{}, plain, ephemeral))
	assert.Empty(t, warnings(nil, roomsNS))
}
