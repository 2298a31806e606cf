package scheduler

import (
	"errors"
	"fmt"
)

// ErrNotStarted is returned by Enqueue before Start.
var ErrNotStarted = errors.New("scheduler: not started")

// ErrStopped is returned by Enqueue once Stop has begun, and by Start after
// Stop.
var ErrStopped = errors.New("scheduler: stopped")

// ErrAlreadyStarted is returned by a second call to Start.
var ErrAlreadyStarted = errors.New("scheduler: already started")

// ErrBatchTooLarge is returned by Enqueue for a call with more events than
// Config.MaxPoolEvents or more bytes than Config.MaxPoolBytes: such a call
// could never be admitted. Split it into smaller calls.
var ErrBatchTooLarge = errors.New("scheduler: enqueue call larger than the event pool")

// ErrInvalidEvent is matched (errors.Is) by every error ParseEvent and
// Enqueue return for a malformed event; the error itself is an
// *InvalidEventError that says which event and why.
var ErrInvalidEvent = errors.New("invalid event")

// ErrInvalidRegistration is matched (errors.Is) by every error
// ParseRegistration, LoadRegistration and New return for a malformed
// registration; the error itself is a *RegistrationError.
var ErrInvalidRegistration = errors.New("invalid registration")

// ErrInvalidConfig is matched (errors.Is) by every error New returns for a
// Config field it cannot accept.
var ErrInvalidConfig = errors.New("invalid config")

// ErrUnknownService is returned by Status and Purge for a service ID that is
// neither configured nor has stored work.
var ErrUnknownService = errors.New("scheduler: unknown service")

// InvalidEventError describes an event that ParseEvent or Enqueue rejected.
// It matches ErrInvalidEvent with errors.Is.
type InvalidEventError struct {
	// Index is the event's position in the Enqueue call (0 for ParseEvent).
	Index int
	// EventID is the event's ID, when it has one.
	EventID string
	// Reason says what is wrong, for a person to read.
	Reason string
}

func (e *InvalidEventError) Error() string {
	if e.EventID != "" {
		return fmt.Sprintf("invalid event %d (%s): %s", e.Index, e.EventID, e.Reason)
	}
	return fmt.Sprintf("invalid event %d: %s", e.Index, e.Reason)
}

// Is reports whether target is ErrInvalidEvent.
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }

// EventTooLargeError is returned by Enqueue for an event whose raw JSON is
// larger than Config.MaxTxnBytes: no transaction could carry it.
type EventTooLargeError struct {
	// Index is the event's position in the Enqueue call.
	Index int
	// EventID is the event's ID.
	EventID string
	// Size is len(Event.Raw).
	Size int
	// Max is Config.MaxTxnBytes.
	Max int
}

func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("event %d (%s) is %d bytes, more than MaxTxnBytes (%d)", e.Index, e.EventID, e.Size, e.Max)
}

// RegistrationError describes a registration that ParseRegistration,
// LoadRegistration or New rejected. It matches ErrInvalidRegistration with
// errors.Is. It never contains the value of as_token or hs_token.
type RegistrationError struct {
	// Source is the registration file's path, "" when it was not read by
	// LoadRegistration.
	Source string
	// ID is the registration's id, when known.
	ID string
	// Field names the offending field as the file spells it, e.g. "url" or
	// "namespaces.users[1].regex"; "" when the file as a whole is wrong.
	Field string
	// Reason says what is wrong and how to fix it.
	Reason string
}

// Error returns "invalid registration {Source} (id {ID}): {Field}: {Reason}",
// leaving out what is empty.
func (e *RegistrationError) Error() string {
	msg := "invalid registration"
	if e.Source != "" {
		msg += " " + e.Source
	}
	if e.ID != "" {
		msg += fmt.Sprintf(" (id %q)", e.ID)
	}
	msg += ": "
	if e.Field != "" {
		msg += e.Field + ": "
	}
	return msg + e.Reason
}

// Is reports whether target is ErrInvalidRegistration.
func (e *RegistrationError) Is(target error) bool { return target == ErrInvalidRegistration }
