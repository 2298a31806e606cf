// Package interop tests asdeliver against an application service framework
// that nobody on this project wrote: the appservice package of
// maunium.net/go/mautrix, which the mautrix bridges (WhatsApp, Signal,
// Telegram, ...) are built on.
//
// The tests run mautrix's AppService in-process, its HTTP handler served on
// 127.0.0.1, and consume what it hands an application through its
// EventProcessor, set up the way mautrix's bridgev2 sets it up (ExecMode
// Sync, a handler per event type, OTK and device-list handlers). A scheduler
// with a SQLite store delivers to it, with the registration a mautrix bridge
// generates (mautrix's own Registration type, written as YAML and read by
// scheduler.ParseRegistration). Nothing connects beyond 127.0.0.1.
//
// This is a module of its own so that the library's dependency list does
// not grow by mautrix and what it needs. mautrix names a newer toolchain in
// its go.mod; build and test this module with GOTOOLCHAIN=local:
//
//	cd interop && GOTOOLCHAIN=local go test -race ./...
//
// The package has no code outside its tests.
package interop
