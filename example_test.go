package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store/memory"
)

// A homeserver starts a Scheduler for its application services and hands
// it every new event.
func Example() {
	// An application service that prints what it receives.
	received := make(chan string, 1)
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		received <- r.Method + " " + strings.TrimRight(r.URL.Path, "0123456789") + "… " + string(body)
		_, _ = io.WriteString(w, "{}")
	}))
	defer as.Close()

	reg, err := scheduler.ParseRegistration([]byte(`
id: whatsapp
url: ` + as.URL + `
as_token: secret-as-token
hs_token: secret-hs-token
sender_localpart: whatsappbot
namespaces:
  users:
    - exclusive: true
      regex: '@whatsapp_.*:example\.org'
`))
	if err != nil {
		log.Fatal(err)
	}

	st := memory.New() // sqlite.Open(path) in production: memory loses everything at exit
	defer st.Close()
	s, err := scheduler.New(scheduler.Config{
		ServerName: "example.org",
		Services:   []*scheduler.Registration{reg},
		Store:      st,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer s.Stop(ctx)

	ev, err := scheduler.ParseEvent([]byte(`{"event_id":"$1:example.org","room_id":"!chat:example.org",` +
		`"sender":"@whatsapp_alice:example.org","type":"m.room.message","content":{"body":"hi"}}`))
	if err != nil {
		log.Fatal(err)
	}
	// Enqueue returns once the event is durable; advance the homeserver's
	// stream position only then.
	if err := s.Enqueue(ctx, ev); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-received)
	// Output:
	// PUT /_matrix/app/v1/transactions/… {"events":[{"event_id":"$1:example.org","room_id":"!chat:example.org","sender":"@whatsapp_alice:example.org","type":"m.room.message","content":{"body":"hi"}}]}
}

// Events that no application service wants are accepted and not stored;
// invalid ones are refused with an error saying which and why.
func ExampleScheduler_Enqueue() {
	st := memory.New()
	defer st.Close()
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Store: st})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer s.Stop(ctx)

	unwanted, err := scheduler.ParseEvent([]byte(`{"event_id":"$1","room_id":"!r:example.org",` +
		`"sender":"@bob:example.org","type":"m.room.message","content":{}}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Enqueue(ctx, unwanted)) // no service wants it: nothing to store

	bad := scheduler.Event{ID: "$2", RoomID: "!r:example.org", Sender: "@bob:example.org", Type: "m.room.message",
		Raw: []byte(`{"event_id":"$2"}`)}
	err = s.Enqueue(ctx, bad)
	fmt.Println(errors.Is(err, scheduler.ErrInvalidEvent))
	fmt.Println(err)
	// Output:
	// <nil>
	// true
	// invalid event 0 ($2): Event.Raw has no room_id
}
