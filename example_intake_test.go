package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store/memory"
)

// startBridge starts a scheduler for one application service that opted in
// to ephemeral events (under their stable name) and prints each body it
// receives; it returns the scheduler and a function that ends everything.
func startBridge(handler http.HandlerFunc) (*scheduler.Scheduler, func()) {
	as := httptest.NewServer(handler)
	reg, err := scheduler.ParseRegistration([]byte(`
id: bridge
url: ` + as.URL + `
as_token: secret-as-token
hs_token: secret-hs-token
sender_localpart: bridgebot
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:example\.org'
  rooms:
    - exclusive: false
      regex: '!bridged:example\.org'
`))
	if err != nil {
		log.Fatal(err)
	}
	st := memory.New()
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{reg}, Store: st})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return s, func() {
		_ = s.Stop(context.Background())
		as.Close()
		_ = st.Close()
	}
}

// Typing notifications, read receipts and presence reach the application
// services that opted in and are interested in the room (or the user),
// durably, like events.
func ExampleScheduler_EnqueueEphemeral() {
	received := make(chan string, 1)
	s, stop := startBridge(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		received <- string(body)
		_, _ = io.WriteString(w, "{}")
	})
	defer stop()

	typing, err := scheduler.ParseEphemeralEvent([]byte(
		`{"type":"m.typing","room_id":"!bridged:example.org","content":{"user_ids":["@alice:example.org"]}}`))
	if err != nil {
		log.Fatal(err)
	}
	if err := s.EnqueueEphemeral(context.Background(), typing); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-received)
	// Output:
	// {"events":[],"ephemeral":[{"type":"m.typing","room_id":"!bridged:example.org","content":{"user_ids":["@alice:example.org"]}}]}
}

// A to-device message for a user in a service's namespace reaches it with
// its recipient, under the key the MSCs name.
func ExampleScheduler_EnqueueToDevice() {
	received := make(chan string, 1)
	s, stop := startBridge(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		received <- string(body)
		_, _ = io.WriteString(w, "{}")
	})
	defer stop()

	err := s.EnqueueToDevice(context.Background(), scheduler.ToDeviceMessage{
		Sender:     "@alice:example.org",
		Type:       "m.room_key_request",
		ToUserID:   "@bridge_bob:example.org",
		ToDeviceID: "BRIDGEDEV",
		Content:    []byte(`{"action":"request_cancellation","request_id":"1"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-received)
	// Output:
	// {"events":[],"de.sorunome.msc2409.to_device":[{"to_user_id":"@bridge_bob:example.org","to_device_id":"BRIDGEDEV","type":"m.room_key_request","sender":"@alice:example.org","content":{"action":"request_cancellation","request_id":"1"}}]}
}

// A homeserver's handler for POST /_matrix/client/v1/appservice/{id}/ping
// calls Ping and maps its errors to the error codes of MSC2659.
func ExampleScheduler_Ping() {
	s, stop := startBridge(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Println("the bridge got", r.Method, r.URL.Path, string(body))
		_, _ = io.WriteString(w, "{}")
	})
	defer stop()

	rtt, err := s.Ping(context.Background(), "bridge", "txn-1")
	var se *scheduler.StatusError
	switch {
	case err == nil:
		fmt.Println("200 OK, round trip measured:", rtt > 0) // answer {"duration_ms": rtt.Milliseconds()}
	case errors.Is(err, scheduler.ErrUnknownService):
		fmt.Println("404 M_NOT_FOUND")
	case errors.Is(err, scheduler.ErrNoURL):
		fmt.Println("400 M_URL_NOT_SET")
	case errors.Is(err, scheduler.ErrTimeout):
		fmt.Println("504 M_CONNECTION_TIMEOUT")
	case errors.As(err, &se):
		fmt.Println("502 M_BAD_STATUS", se.Status, se.Answer)
	default:
		fmt.Println("502 M_CONNECTION_FAILED")
	}
	// Output:
	// the bridge got POST /_matrix/app/v1/ping {"transaction_id":"txn-1"}
	// 200 OK, round trip measured: true
}
