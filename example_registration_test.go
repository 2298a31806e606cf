package scheduler_test

import (
	"errors"
	"fmt"

	"github.com/asdeliver/scheduler"
)

// A homeserver that keeps its application services in its own
// configuration builds registrations without YAML. Validate checks one as
// New will.
func ExampleRegistration() {
	irc := &scheduler.Registration{
		ID:              "irc",
		URL:             "http://127.0.0.1:9999/",
		ASToken:         "secret-as-token",
		HSToken:         "secret-hs-token",
		SenderLocalpart: "ircbot",
		Namespaces: scheduler.Namespaces{
			Users: []scheduler.Namespace{{Regex: `@irc_.*:example\.org`, Exclusive: true}},
			Rooms: []scheduler.Namespace{{Regex: `!irc-.*:example\.org`}},
		},
		ReceiveEphemeral: true,
	}
	fmt.Println(irc.Validate(), irc.URL) // the trailing '/' is removed

	broken := &scheduler.Registration{ID: "broken", ASToken: "secret", SenderLocalpart: "bot"}
	err := broken.Validate()
	fmt.Println(errors.Is(err, scheduler.ErrInvalidRegistration))
	fmt.Println(err)
	// Output:
	// <nil> http://127.0.0.1:9999
	// true
	// invalid registration (id "broken"): hs_token: is empty: set it to the secret token the application service expects from the homeserver
}
