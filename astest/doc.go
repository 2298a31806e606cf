// Package astest is a fake Matrix application service for tests: a server
// on 127.0.0.1 that a homeserver using asdeliver (or any other sender of
// the Application Service API) delivers to, and that records and checks
// what it receives.
//
// It answers as an application service does: it checks the hs_token (403
// when wrong), decodes every transaction body as an application service
// would (Txn), and answers {} with 200. On request it fails (FailWith,
// Down and Up, or any answer with Respond), hangs until released (Hang,
// Release) or answers slowly (Delay).
//
// It records every request (Requests), the event IDs in the order of
// their first successful delivery (Delivered) and how many times each was
// delivered (Deliveries), and counts (Stats). It checks what the protocol
// promises an application service: a transaction ID sent again, after a
// success or a failure, carries a byte-identical body; every body is JSON
// with "events"; the two ephemeral keys, when both are present, carry the
// same events. A broken promise is a problem (Problems), which fails the
// test when the server was made with New.
//
// Tests wait on conditions, never on guessed sleeps: WaitDelivered,
// WaitArrived and Wait return as soon as the condition holds.
//
// In a test, New registers the server's Close with the test's cleanup and
// reports problems with t.Errorf:
//
//	as := astest.New(t, "hs-token")
//	reg := &scheduler.Registration{ID: "bridge", URL: as.URL(), HSToken: as.HSToken(), ...}
//	...
//	as.Down()                    // the bridge restarts: every request gets 503
//	...
//	as.Up()
//	err := as.WaitDelivered(ctx, 3)
//	got := as.Delivered()
//
// In a plain program, NewServer does the same without a test; call Close
// when done and read Problems.
//
// The package depends on the standard library only.
package astest
