package wire

import (
	"errors"
	"fmt"

	"github.com/asdeliver/scheduler/store"
)

// ErrUnknownFormat is matched by the error Body returns for a format it
// cannot produce: a transaction stored by a newer build, or a corrupt
// record.
var ErrUnknownFormat = errors.New("wire: unknown body format")

// ErrInvalidItem is matched by the error Body returns for an item it cannot
// put into a body: a kind it does not know, data that is not a JSON object,
// or device data it cannot read.
var ErrInvalidItem = errors.New("wire: invalid item")

// The body keys, in the order Body writes them.
const (
	keyEvents            = `{"events":[`
	keyEphemeral         = `,"ephemeral":[`
	keyEphemeralUnstable = `,"de.sorunome.msc2409.ephemeral":[`
	keyToDevice          = `,"de.sorunome.msc2409.to_device":[`
	bodyClose            = '}'
)

// Body assembles the body of a transaction from its stored items, as the
// format recorded with the transaction says (see Format, FormatFor and
// Flags):
//
//	{"events":[...],
//	 "ephemeral":[...], "de.sorunome.msc2409.ephemeral":[...],
//	 "de.sorunome.msc2409.to_device":[...],
//	 "org.matrix.msc3202.device_lists":{"changed":[...],"left":[...]},
//	 "org.matrix.msc3202.device_one_time_key_counts":{...},
//	 "org.matrix.msc3202.device_one_time_keys_count":{...},
//	 "org.matrix.msc3202.device_unused_fallback_key_types":{...}}
//
// in that key order, without white space between them.
//
//   - "events" is always present, "[]" when there are no events (one AS
//     framework rejects a body without it), with the Data of every
//     store.KindEvent item in order.
//   - Every other key is present only when the format's flag for it is set
//     and there is content for it. Ephemeral items (store.KindEphemeral) go
//     under "ephemeral" (EphemeralStable) and "de.sorunome.msc2409.ephemeral"
//     (EphemeralUnstable), the same content under both when both flags are
//     set; to-device items (store.KindToDevice, see EncodeToDevice) under
//     "de.sorunome.msc2409.to_device" (ToDevice).
//   - With DeviceData, the device-list summaries (store.KindDeviceLists, see
//     EncodeDeviceLists) are merged in order, a later summary winning for a
//     user: "changed" and "left" hold the users, sorted. The key counts
//     (store.KindKeyCounts, see EncodeKeyCounts) are merged per user and
//     device, the later item winning for each of its two parts; the
//     one-time key counts appear under both of their names, as Synapse
//     sends them.
//   - Items of a kind whose flags the format lacks are left out: the
//     service opted out after they were queued. Format (1) is the format
//     without flags: every kind but events is left out.
//
// The Data of events, ephemeral and to-device items is copied verbatim,
// never decoded and re-encoded; device data is decoded and written by this
// package alone (never by encoding/json), maps in key order. The result
// depends only on format and the items: same items, same bytes, also in a
// later build. Body trusts that verbatim Data is the JSON object validated
// at intake; it checks only that the first and last non-space bytes are '{'
// and '}', so that an empty or obviously damaged item fails here
// (ErrInvalidItem) instead of producing a body no AS can parse. A kind Body
// does not know, and device data it cannot decode, also fail with
// ErrInvalidItem, and a format FormatFor cannot return with
// ErrUnknownFormat. A body of events alone is allocated once.
func Body(format int, items []store.Item) ([]byte, error) {
	flags, err := flagsOf(format)
	if err != nil {
		return nil, err
	}
	var (
		sizes   [store.KindToDevice + 1]int // bytes of the verbatim items of each kind, commas included
		counts  [store.KindToDevice + 1]int
		devices deviceData
	)
	for i := range items {
		it := &items[i]
		switch it.Kind {
		case store.KindEvent:
		case store.KindEphemeral:
			if flags&(EphemeralStable|EphemeralUnstable) == 0 {
				continue
			}
		case store.KindToDevice:
			if flags&ToDevice == 0 {
				continue
			}
		case store.KindDeviceLists, store.KindKeyCounts:
			if flags&DeviceData == 0 {
				continue
			}
			var ok bool
			if it.Kind == store.KindDeviceLists {
				ok = devices.addDeviceLists(it.Data)
			} else {
				ok = devices.addKeyCounts(it.Data)
			}
			if !ok {
				return nil, fmt.Errorf("%w: item %d (seq %d) of kind %d is not device data this build can read", ErrInvalidItem, i, it.Seq, it.Kind)
			}
			continue
		default:
			return nil, fmt.Errorf("%w: item %d (seq %d) has unknown kind %d", ErrInvalidItem, i, it.Seq, it.Kind)
		}
		if !isObject(it.Data) {
			return nil, fmt.Errorf("%w: item %d (seq %d) is not a JSON object", ErrInvalidItem, i, it.Seq)
		}
		sizes[it.Kind] += len(it.Data) + 1 // the data and a comma
		counts[it.Kind]++
	}
	var tail []byte // the MSC3202 keys, rare enough to cost an allocation
	if flags&DeviceData != 0 {
		tail = devices.appendKeys(nil)
	}

	// Every list's size less its last comma, plus its key and closing ']'.
	n := len(keyEvents) + max(sizes[store.KindEvent]-1, 0) + 1
	if c := counts[store.KindEphemeral]; c > 0 {
		if flags&EphemeralStable != 0 {
			n += len(keyEphemeral) + sizes[store.KindEphemeral] - 1 + 1
		}
		if flags&EphemeralUnstable != 0 {
			n += len(keyEphemeralUnstable) + sizes[store.KindEphemeral] - 1 + 1
		}
	}
	if counts[store.KindToDevice] > 0 {
		n += len(keyToDevice) + sizes[store.KindToDevice] - 1 + 1
	}
	n += len(tail) + 1

	b := make([]byte, 0, n)
	b = appendList(b, keyEvents, items, store.KindEvent)
	if counts[store.KindEphemeral] > 0 {
		if flags&EphemeralStable != 0 {
			b = appendList(b, keyEphemeral, items, store.KindEphemeral)
		}
		if flags&EphemeralUnstable != 0 {
			b = appendList(b, keyEphemeralUnstable, items, store.KindEphemeral)
		}
	}
	if counts[store.KindToDevice] > 0 {
		b = appendList(b, keyToDevice, items, store.KindToDevice)
	}
	b = append(b, tail...)
	b = append(b, bodyClose)
	return b, nil
}

// appendList appends key (which opens the list) and the Data of the items
// of kind k, comma-separated, then closes the list.
func appendList(b []byte, key string, items []store.Item, k store.Kind) []byte {
	b = append(b, key...)
	first := true
	for i := range items {
		if items[i].Kind != k {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, items[i].Data...)
	}
	return append(b, ']')
}

// isObject reports whether data, without the JSON white space around it,
// starts with '{' and ends with '}'. It does not parse what lies between.
func isObject(data []byte) bool {
	i, j := 0, len(data)
	for i < j && isSpace(data[i]) {
		i++
	}
	for j > i && isSpace(data[j-1]) {
		j--
	}
	return j-i >= 2 && data[i] == '{' && data[j-1] == '}'
}

// isSpace reports whether c is JSON white space.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}
