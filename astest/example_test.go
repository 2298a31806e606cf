package astest_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/memory"
)

// A homeserver's test: the bridge fails its first transaction, the
// scheduler retries it, and the test checks that every event arrived, in
// order. In a test, astest.New(t, token) closes the server at the end of
// the test and fails it on any problem.
func Example() {
	as := astest.NewServer("secret-hs-token")
	defer as.Close()
	as.FailWith(func(n int) int {
		if n == 0 {
			return http.StatusServiceUnavailable // the bridge is starting
		}
		return 0
	})

	reg := &scheduler.Registration{
		ID:              "bridge",
		URL:             as.URL(),
		HSToken:         as.HSToken(),
		ASToken:         "secret-as-token",
		SenderLocalpart: "bridgebot",
		Namespaces: scheduler.Namespaces{
			Users: []scheduler.Namespace{{Regex: `@bridge_.*:example\.org`, Exclusive: true}},
		},
	}
	st := memory.New()
	defer st.Close()
	s, err := scheduler.New(scheduler.Config{
		ServerName:   "example.org",
		Services:     []*scheduler.Registration{reg},
		Store:        st,
		RetryInitial: 10 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer s.Stop(ctx)

	var events []scheduler.Event
	for _, id := range []string{"$1", "$2", "$3"} {
		ev, err := scheduler.ParseEvent([]byte(`{"event_id":"` + id + `","room_id":"!chat:example.org",` +
			`"sender":"@bridge_alice:example.org","type":"m.room.message","content":{"body":"hi"}}`))
		if err != nil {
			log.Fatal(err)
		}
		events = append(events, ev)
	}
	if err := s.Enqueue(ctx, events...); err != nil {
		log.Fatal(err)
	}

	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := as.WaitDelivered(wait, len(events)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered:", as.Delivered())
	fmt.Println("failed attempts:", as.Stats().Failed)
	fmt.Println("problems:", as.Problems())
	// Output:
	// delivered: [$1 $2 $3]
	// failed attempts: 1
	// problems: []
}
