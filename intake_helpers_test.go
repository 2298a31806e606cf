package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

// mustEphemeral parses raw, failing the test if it is invalid.
func mustEphemeral(t testing.TB, raw string) EphemeralEvent {
	t.Helper()
	ev, err := ParseEphemeralEvent([]byte(raw))
	require.NoError(t, err)
	return ev
}

// typingIn returns a typing notification for room whose content carries
// marker, so that a test can find it in a body.
func typingIn(t testing.TB, room, marker string) EphemeralEvent {
	return mustEphemeral(t, fmt.Sprintf(`{"type":"m.typing","room_id":%q,"content":{"user_ids":["@a:example.org"],"marker":%q}}`, room, marker))
}

// receiptIn returns a read receipt for room carrying marker.
func receiptIn(t testing.TB, room, marker string) EphemeralEvent {
	return mustEphemeral(t, fmt.Sprintf(`{"type":"m.receipt","room_id":%q,"content":{"$e":{"m.read":{"@a:example.org":{"ts":1}}},"marker":%q}}`, room, marker))
}

// presenceOf returns a presence update of user carrying marker.
func presenceOf(t testing.TB, user, marker string) EphemeralEvent {
	return mustEphemeral(t, fmt.Sprintf(`{"type":"m.presence","sender":%q,"content":{"presence":"online","marker":%q}}`, user, marker))
}

// toDeviceFor returns a to-device message for user's device DEV carrying
// marker.
func toDeviceFor(user, marker string) ToDeviceMessage {
	return ToDeviceMessage{
		Sender: "@alice:example.org", Type: "m.room.encrypted", ToUserID: user, ToDeviceID: "DEV",
		Content: json.RawMessage(fmt.Sprintf(`{"algorithm":"m.olm.v1.curve25519-aes-sha2","marker":%q}`, marker)),
	}
}

// bodyKeys parses a transaction body and returns it by key.
func bodyKeys(t testing.TB, body []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m), "body %s", body)
	return m
}

// keysOf returns the keys of a parsed body, sorted.
func keysOf(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// txnBodies returns the bodies of the transactions as received successfully,
// in arrival order.
func txnBodies(as *astest.Server) [][]byte {
	var out [][]byte
	for _, r := range successes(as) {
		if strings.HasPrefix(r.Path, "/_matrix/app/v1/transactions/") {
			out = append(out, r.Body)
		}
	}
	return out
}

// received reports whether a transaction as received successfully contains
// marker (quoted, as it appears in JSON).
func received(as *astest.Server, marker string) bool {
	q := fmt.Sprintf("%q", marker)
	for _, b := range txnBodies(as) {
		if strings.Contains(string(b), q) {
			return true
		}
	}
	return false
}

// waitReceived waits until as received a transaction containing marker.
func waitReceived(t testing.TB, as *astest.Server, marker string) {
	t.Helper()
	waitFor(t, "marker "+marker+" delivered", func() bool { return received(as, marker) })
}

// roomsDirectory is a RoomDirectory that also implements UserRooms.
type roomsDirectory struct {
	fakeDirectory
	joined map[string][]string
}

func (d roomsDirectory) JoinedRooms(_ context.Context, user string) ([]string, error) {
	return d.joined[user], d.err
}

// withFlags sets a registration's opt-ins and returns it.
func withFlags(r *Registration, stable, unstable, msc3202 bool) *Registration {
	r.ReceiveEphemeral, r.PushEphemeral, r.MSC3202 = stable, unstable, msc3202
	return r
}
