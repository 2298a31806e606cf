package wire

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// This file defines the stored bytes (store.Item.Data) of the kinds whose
// items are built by the scheduler rather than handed over whole by the
// homeserver: to-device messages and MSC3202 device data. The scheduler
// encodes them at intake with the functions below, Body decodes and merges
// the device data. The encodings are stored: never change what they read
// or write for existing data.
//
// Everything is written by appendString and strconv, never by
// encoding/json, so the bytes do not depend on the version of a library:
// a body merged from device data is rebuilt byte for byte on every retry,
// by this build or a later one.

// EncodeToDevice returns the stored form of a to-device message, which is
// also what the application service receives under
// "de.sorunome.msc2409.to_device":
//
//	{"to_user_id":…,"to_device_id":…,"type":…,"sender":…,"content":<content>}
//
// content is copied verbatim; the caller has checked that it is a JSON
// object. Strings are written as JSON strings, invalid UTF-8 replaced by
// U+FFFD.
func EncodeToDevice(toUserID, toDeviceID, typ, sender string, content []byte) []byte {
	b := make([]byte, 0, 80+len(toUserID)+len(toDeviceID)+len(typ)+len(sender)+len(content))
	b = append(b, `{"to_user_id":`...)
	b = appendString(b, toUserID)
	b = append(b, `,"to_device_id":`...)
	b = appendString(b, toDeviceID)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"sender":`...)
	b = appendString(b, sender)
	b = append(b, `,"content":`...)
	b = append(b, content...)
	return append(b, '}')
}

// EncodeDeviceLists returns the stored form of one device-list summary:
// {"changed":[...],"left":[...]}, each list sorted (byte order) without
// repeats, both always present. A user in both lists is the caller's
// error; Body would apply "changed" first, then "left".
func EncodeDeviceLists(changed, left []string) []byte {
	changed, left = sortedSet(changed), sortedSet(left)
	b := make([]byte, 0, 24+listSize(changed)+listSize(left))
	b = append(b, `{"changed":`...)
	b = appendStrings(b, changed)
	b = append(b, `,"left":`...)
	b = appendStrings(b, left)
	return append(b, '}')
}

// EncodeKeyCounts returns the stored form of the key counts of one device:
//
//	{"user_id":…,"device_id":…,"one_time_key_counts":{…},"unused_fallback_key_types":[…]}
//
// with the counts by algorithm in key order. A nil otk or fallback leaves
// its key out: the item says nothing about it. An empty non-nil one is
// written as {} or []: the device has none.
func EncodeKeyCounts(userID, deviceID string, otk map[string]int, fallback []string) []byte {
	b := make([]byte, 0, 128+len(userID)+len(deviceID)+32*len(otk)+listSize(fallback))
	b = append(b, `{"user_id":`...)
	b = appendString(b, userID)
	b = append(b, `,"device_id":`...)
	b = appendString(b, deviceID)
	if otk != nil {
		b = append(b, `,"one_time_key_counts":`...)
		b = appendCounts(b, otk)
	}
	if fallback != nil {
		b = append(b, `,"unused_fallback_key_types":`...)
		b = appendStrings(b, fallback)
	}
	return append(b, '}')
}

// storedDeviceLists is the stored form of a KindDeviceLists item.
type storedDeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// storedKeyCounts is the stored form of a KindKeyCounts item.
type storedKeyCounts struct {
	UserID   string         `json:"user_id"`
	DeviceID string         `json:"device_id"`
	OTK      map[string]int `json:"one_time_key_counts"`
	Fallback []string       `json:"unused_fallback_key_types"`
}

// deviceData merges the MSC3202 items of one transaction, in order: what a
// later item says wins.
type deviceData struct {
	changed, left map[string]struct{}
	otk           map[string]map[string]map[string]int // user → device → algorithm → count
	fallback      map[string]map[string][]string       // user → device → key types
}

// addDeviceLists merges one stored KindDeviceLists item: a user in its
// "changed" list leaves the merged "left" list and joins "changed", and the
// other way round; "changed" is applied first.
func (d *deviceData) addDeviceLists(data []byte) bool {
	var dl storedDeviceLists
	if json.Unmarshal(data, &dl) != nil || !validStrings(dl.Changed) || !validStrings(dl.Left) {
		return false
	}
	if d.changed == nil {
		d.changed, d.left = make(map[string]struct{}), make(map[string]struct{})
	}
	for _, u := range dl.Changed {
		delete(d.left, u)
		d.changed[u] = struct{}{}
	}
	for _, u := range dl.Left {
		delete(d.changed, u)
		d.left[u] = struct{}{}
	}
	return true
}

// addKeyCounts merges one stored KindKeyCounts item: its one-time key
// counts replace the device's earlier ones, and so do its fallback key
// types; a part the item leaves out leaves the earlier value standing.
func (d *deviceData) addKeyCounts(data []byte) bool {
	var kc storedKeyCounts
	if json.Unmarshal(data, &kc) != nil || kc.UserID == "" || kc.DeviceID == "" ||
		(kc.OTK == nil && kc.Fallback == nil) || !validStrings(kc.Fallback) {
		return false
	}
	if kc.OTK != nil {
		if d.otk == nil {
			d.otk = make(map[string]map[string]map[string]int)
		}
		if d.otk[kc.UserID] == nil {
			d.otk[kc.UserID] = make(map[string]map[string]int)
		}
		d.otk[kc.UserID][kc.DeviceID] = kc.OTK
	}
	if kc.Fallback != nil {
		if d.fallback == nil {
			d.fallback = make(map[string]map[string][]string)
		}
		if d.fallback[kc.UserID] == nil {
			d.fallback[kc.UserID] = make(map[string][]string)
		}
		d.fallback[kc.UserID][kc.DeviceID] = kc.Fallback
	}
	return true
}

// validStrings reports whether no string of list is empty.
func validStrings(list []string) bool {
	return !slices.Contains(list, "")
}

// appendKeys appends the MSC3202 keys of the merged data to b, each with a
// leading comma, leaving out the empty ones: "org.matrix.msc3202.device_lists",
// the one-time key counts under both the names AS frameworks read
// ("org.matrix.msc3202.device_one_time_key_counts", as MSC3202 spells it,
// and "org.matrix.msc3202.device_one_time_keys_count", as the client-server
// API does), then "org.matrix.msc3202.device_unused_fallback_key_types".
// Maps are written in key order, lists of users sorted.
func (d *deviceData) appendKeys(b []byte) []byte {
	if len(d.changed) > 0 || len(d.left) > 0 {
		b = append(b, `,"org.matrix.msc3202.device_lists":{"changed":`...)
		b = appendStrings(b, sortedKeys(d.changed))
		b = append(b, `,"left":`...)
		b = appendStrings(b, sortedKeys(d.left))
		b = append(b, '}')
	}
	if len(d.otk) > 0 {
		b = append(b, `,"org.matrix.msc3202.device_one_time_key_counts":`...)
		valueAt := len(b)
		b = appendByUserDevice(b, d.otk, appendCounts)
		// The same bytes again under the other name.
		value := b[valueAt:]
		b = append(b, `,"org.matrix.msc3202.device_one_time_keys_count":`...)
		b = append(b, value...)
	}
	if len(d.fallback) > 0 {
		b = append(b, `,"org.matrix.msc3202.device_unused_fallback_key_types":`...)
		b = appendByUserDevice(b, d.fallback, appendStrings)
	}
	return b
}

// sortedKeys returns the keys of m in byte order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sortedSet returns a sorted copy of list without repeats.
func sortedSet(list []string) []string {
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

// listSize estimates the encoded size of a list of strings.
func listSize(list []string) int {
	n := 2
	for _, s := range list {
		n += len(s) + 3
	}
	return n
}

// appendCounts appends {"algorithm":count,...} in key order.
func appendCounts(b []byte, counts map[string]int) []byte {
	b = append(b, '{')
	for i, alg := range sortedKeys(counts) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, alg)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(counts[alg]), 10)
	}
	return append(b, '}')
}

// appendStrings appends list as a JSON array of strings, in its order;
// nil is written as [].
func appendStrings(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string: '"' and '\\' escaped, control
// characters as \n, \r, \t or \u00XX, everything else as it is, except
// that each invalid UTF-8 byte becomes U+FFFD. The output is fixed by this
// function alone, whatever the Go version.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// appendByUserDevice appends m as a JSON object of users, each an object
// of devices, keys in byte order, each value written by appendValue.
func appendByUserDevice[V any](b []byte, m map[string]map[string]V, appendValue func([]byte, V) []byte) []byte {
	b = append(b, '{')
	for i, user := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, user)
		b = append(b, ":{"...)
		devices := m[user]
		for j, device := range sortedKeys(devices) {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, device)
			b = append(b, ':')
			b = appendValue(b, devices[device])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}
