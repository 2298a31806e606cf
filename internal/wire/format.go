package wire

import "fmt"

// Format is the body format of a transaction for an application service
// that opted in to nothing but room events: {"events":[...]}. It is also
// what FormatFor(0) returns. Formats are recorded with every stored
// transaction (store.Txn.Format), and Body must produce the same bytes for
// the same items and format forever, so that a retried transaction is
// byte-identical: never change what an existing format produces; add a new
// version instead, and keep the old one's code.
const Format = 1

// formatV2 is the version of the bodies FormatFor builds for a service that
// opted in to more than room events; the Flags sit above it, from bit
// flagShift on.
const (
	formatV2  = 2
	flagShift = 8
)

// Flags say which body keys beyond "events" an application service
// receives: what its registration opted in to when a transaction was
// formed. They are part of the transaction's format (FormatFor), so a
// retry after the registration changed still sends the same bytes.
type Flags uint8

// The Flags. Their values are stored, within formats, and must not change.
const (
	// EphemeralStable puts ephemeral events (typing, receipts, presence)
	// under "ephemeral": the registration's receive_ephemeral.
	EphemeralStable Flags = 1 << iota
	// EphemeralUnstable puts them under "de.sorunome.msc2409.ephemeral":
	// the registration's de.sorunome.msc2409.push_ephemeral. With both
	// flags the same content goes under both keys.
	EphemeralUnstable
	// ToDevice puts to-device messages under
	// "de.sorunome.msc2409.to_device" (MSC4203, named after MSC2409 for
	// historical reasons); set when either ephemeral flag is.
	ToDevice
	// DeviceData puts MSC3202 device data under its org.matrix.msc3202.*
	// keys: device-list changes, one-time key counts and unused fallback
	// key types; the registration's org.matrix.msc3202.
	DeviceData

	allFlags = EphemeralStable | EphemeralUnstable | ToDevice | DeviceData
)

// FormatFor returns the body format for a service with flags: Format when
// flags is 0, else version 2 with the flags above its low 8 bits
// (2 | flags<<8). Bits of flags beyond the four defined are ignored.
func FormatFor(flags Flags) int {
	flags &= allFlags
	if flags == 0 {
		return Format
	}
	return formatV2 | int(flags)<<flagShift
}

// flagsOf returns the Flags of a format FormatFor can return, or an error
// matching ErrUnknownFormat.
func flagsOf(format int) (Flags, error) {
	if format == Format {
		return 0, nil
	}
	flags := format >> flagShift
	if format < 0 || format&(1<<flagShift-1) != formatV2 || flags == 0 || flags&^int(allFlags) != 0 {
		return 0, fmt.Errorf("%w %d (this build writes format %d, and %d plus flags up to %d shifted by %d)",
			ErrUnknownFormat, format, Format, formatV2, allFlags, flagShift)
	}
	return Flags(flags), nil
}
