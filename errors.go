package scheduler

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrNotStarted is returned by Enqueue, EnqueueEphemeral, EnqueueToDevice,
// EnqueueDeviceLists, EnqueueDeviceKeyCounts and Ping before Start.
var ErrNotStarted = errors.New("scheduler: not started")

// ErrStopped is returned by Enqueue, EnqueueEphemeral, EnqueueToDevice,
// EnqueueDeviceLists, EnqueueDeviceKeyCounts and Ping once Stop has begun,
// and by Start after Stop.
var ErrStopped = errors.New("scheduler: stopped")

// ErrAlreadyStarted is returned by a second call to Start.
var ErrAlreadyStarted = errors.New("scheduler: already started")

// ErrBatchTooLarge is returned by Enqueue (and the other Enqueue methods)
// for a call with more items than Config.MaxPoolEvents or more bytes than
// Config.MaxPoolBytes: such a call could never be admitted. Split it into
// smaller calls.
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
// neither configured nor has stored work, and by Ping for a service ID that
// is not configured.
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

// ErrInvalidEphemeral is matched (errors.Is) by every error
// ParseEphemeralEvent and EnqueueEphemeral return for a malformed ephemeral
// event; the error itself is an *InvalidInputError.
var ErrInvalidEphemeral = errors.New("invalid ephemeral event")

// ErrInvalidToDevice is matched (errors.Is) by every error EnqueueToDevice
// returns for a malformed to-device message; the error itself is an
// *InvalidInputError.
var ErrInvalidToDevice = errors.New("invalid to-device message")

// ErrInvalidDeviceLists is matched (errors.Is) by every error
// EnqueueDeviceLists returns for malformed device-list changes; the error
// itself is an *InvalidInputError.
var ErrInvalidDeviceLists = errors.New("invalid device-list changes")

// ErrInvalidKeyCounts is matched (errors.Is) by every error
// EnqueueDeviceKeyCounts returns for malformed key counts; the error itself
// is an *InvalidInputError.
var ErrInvalidKeyCounts = errors.New("invalid device key counts")

// InvalidInputError describes an item that ParseEphemeralEvent,
// EnqueueEphemeral, EnqueueToDevice, EnqueueDeviceLists or
// EnqueueDeviceKeyCounts rejected, including one too large for any
// transaction. It matches its kind's sentinel (Err) with errors.Is.
type InvalidInputError struct {
	// Err is the sentinel of the item's kind: ErrInvalidEphemeral,
	// ErrInvalidToDevice, ErrInvalidDeviceLists or ErrInvalidKeyCounts.
	Err error
	// Index is the item's position in the call (0 for ParseEphemeralEvent
	// and EnqueueDeviceLists).
	Index int
	// Reason says what is wrong, for a person to read.
	Reason string
}

// Error returns "{Err} {Index}: {Reason}" ("{Err}: {Reason}" for
// device-list changes, one per call).
func (e *InvalidInputError) Error() string {
	if e.Err == ErrInvalidDeviceLists {
		return fmt.Sprintf("%v: %s", e.Err, e.Reason)
	}
	return fmt.Sprintf("%v %d: %s", e.Err, e.Index, e.Reason)
}

// Unwrap returns Err, so that errors.Is matches the kind's sentinel.
func (e *InvalidInputError) Unwrap() error { return e.Err }

// ErrNoURL is returned by Ping for a service whose registration has url:
// null: it has nowhere to be reached.
var ErrNoURL = errors.New("scheduler: application service has no URL (url: null)")

// ErrTimeout is matched (errors.Is) by the error Ping returns when the
// application service did not connect or answer within
// Config.ConnectTimeout or Config.AnswerTimeout (or a timeout of
// Config.HTTPClient).
var ErrTimeout = errors.New("scheduler: application service timed out")

// ErrBadStatus is matched (errors.Is) by the error Ping returns when the
// application service answered with something else than success: a status
// outside 2xx, or a 2xx answer that is not JSON. The error is then also a
// *StatusError with the answer.
var ErrBadStatus = errors.New("scheduler: application service answered with an error")

// ErrUnreachable is matched (errors.Is) by the error Ping returns when no
// answer came for another reason than a timeout: the connection was
// refused or broken, the name did not resolve, and so on. The error wraps
// the network error.
var ErrUnreachable = errors.New("scheduler: application service unreachable")

// StatusError is the answer of an application service that did not succeed
// (see ErrBadStatus). It never contains the tokens.
type StatusError struct {
	// Status is the HTTP status code of the answer.
	Status int
	// Answer is the start of the answer's body, at most about 200 bytes,
	// with non-printable bytes replaced and tokens redacted.
	Answer string
	// Reason says why the answer is not a success.
	Reason string
}

// Error gives the status, the reason and the answer.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("application service answered %d (%s)", e.Status, e.Reason)
	if e.Answer != "" {
		msg += ": " + e.Answer
	}
	return msg
}

// Is reports whether target is ErrBadStatus.
func (e *StatusError) Is(target error) bool { return target == ErrBadStatus }

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const limit = 100
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q...", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}
