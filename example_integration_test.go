package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/memory"
)

// One invalid event fails the whole Enqueue call and stores nothing. A
// homeserver that must not let one bad event block its stream drops the
// event at InvalidEventError.Index, logs it, and enqueues the rest.
func ExampleInvalidEventError() {
	st := memory.New()
	defer st.Close()
	irc, err := scheduler.ParseRegistration([]byte(`
id: irc
url: http://127.0.0.1:1
as_token: secret-as
hs_token: secret-hs
sender_localpart: ircbot
namespaces:
  users: [{exclusive: true, regex: '@irc_.*'}]
`))
	if err != nil {
		log.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{irc}, Store: st})
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
		events = append(events, scheduler.Event{ID: id, RoomID: "!r:example.org", Sender: "@irc_bob:example.org",
			Type: "m.room.message", Raw: []byte(`{"event_id":"` + id + `","room_id":"!r:example.org",` +
				`"sender":"@irc_bob:example.org","type":"m.room.message","content":{}}`)})
	}
	events[1].Sender = "@irc_mallory:example.org" // disagrees with its Raw

	for {
		err := s.Enqueue(ctx, events...)
		var invalid *scheduler.InvalidEventError
		if !errors.As(err, &invalid) {
			fmt.Println("enqueued", len(events), "events:", err)
			break
		}
		fmt.Println("dropped", invalid.EventID+":", invalid.Reason)
		events = slices.Delete(events, invalid.Index, invalid.Index+1)
	}
	// Output:
	// dropped $2: sender in Event.Raw is "@irc_bob:example.org" but the Event field says "@irc_mallory:example.org"
	// enqueued 2 events: <nil>
}

// directory is a homeserver's in-memory view of its rooms, as
// Config.Rooms asks for it: fast, no query per call.
type directory struct {
	aliases map[string][]string // room ID → local aliases
	members map[string][]string // room ID → local joined members
	joined  map[string][]string // user ID → rooms
}

func (d directory) LocalAliases(_ context.Context, roomID string) ([]string, error) {
	return d.aliases[roomID], nil
}

func (d directory) LocalMembers(_ context.Context, roomID string) ([]string, error) {
	return d.members[roomID], nil
}

// JoinedRooms makes directory a UserRooms too: presence and device-list
// changes then reach services that share a room with the user.
func (d directory) JoinedRooms(_ context.Context, userID string) ([]string, error) {
	return d.joined[userID], nil
}

// With a RoomDirectory, a bridge gets the messages of ordinary users in a
// room where one of its users is a member, as Synapse decides.
func ExampleRoomDirectory() {
	as := astest.NewServer("secret-hs")
	defer as.Close()
	irc, err := scheduler.ParseRegistration([]byte(`
id: irc
url: ` + as.URL() + `
as_token: secret-as
hs_token: secret-hs
sender_localpart: ircbot
namespaces:
  users: [{exclusive: true, regex: '@irc_.*'}]
`))
	if err != nil {
		log.Fatal(err)
	}
	st := memory.New()
	defer st.Close()
	rooms := directory{members: map[string][]string{"!chat:example.org": {"@alice:example.org", "@irc_bob:example.org"}}}
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{irc},
		Store: st, Rooms: rooms})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer s.Stop(ctx)

	ev, err := scheduler.ParseEvent([]byte(`{"event_id":"$hello","room_id":"!chat:example.org",` +
		`"sender":"@alice:example.org","type":"m.room.message","content":{"body":"hello"}}`))
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Enqueue(ctx, ev); err != nil {
		log.Fatal(err)
	}
	if err := as.WaitDelivered(ctx, 1); err != nil {
		log.Fatal(err)
	}
	fmt.Println(as.Delivered())
	// Output:
	// [$hello]
}

// An operator looks at a service, and removes the work a service left
// behind when it was taken out of the configuration.
func ExampleScheduler_Purge() {
	st := memory.New()
	defer st.Close()
	ctx := context.Background()
	old, err := scheduler.ParseRegistration([]byte(`
id: old-bridge
url: http://127.0.0.1:1
as_token: secret-as
hs_token: secret-hs
sender_localpart: oldbot
namespaces:
  users: [{exclusive: true, regex: '@old_.*'}]
`))
	if err != nil {
		log.Fatal(err)
	}
	ev, err := scheduler.ParseEvent([]byte(`{"event_id":"$1","room_id":"!r:example.org",` +
		`"sender":"@old_bob:example.org","type":"m.room.message","content":{}}`))
	if err != nil {
		log.Fatal(err)
	}
	// A scheduler that had the bridge queued an event for it and stopped.
	before, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{old}, Store: st})
	if err != nil {
		log.Fatal(err)
	}
	if err := before.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if err := before.Enqueue(ctx, ev); err != nil {
		log.Fatal(err)
	}
	if err := before.Stop(ctx); err != nil {
		log.Fatal(err)
	}

	// The next one runs without it.
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Store: st})
	if err != nil {
		log.Fatal(err)
	}
	status, err := s.Status(ctx, "old-bridge")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(status.State, status.QueuedEvents+status.StoredTxns > 0)
	if err := s.Purge(ctx, "old-bridge"); err != nil {
		log.Fatal(err)
	}
	_, err = s.Status(ctx, "old-bridge")
	fmt.Println(errors.Is(err, scheduler.ErrUnknownService))
	// Output:
	// UNCONFIGURED true
	// true
}

// ParseRegistration reads a registration file as Synapse does.
func ExampleParseRegistration() {
	reg, err := scheduler.ParseRegistration([]byte(`
id: whatsapp
url: http://localhost:29318
as_token: secret-as-token
hs_token: secret-hs-token
sender_localpart: whatsappbot
namespaces:
  users:
    - exclusive: true
      regex: '@whatsapp_.*:example\.org'
receive_ephemeral: true
`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reg.ID, reg.URL, reg.UserID("example.org"), reg.ReceiveEphemeral)
	fmt.Println(strings.Contains(reg.String(), "secret")) // tokens never show
	// Output:
	// whatsapp http://localhost:29318 @whatsappbot:example.org true
	// false
}
