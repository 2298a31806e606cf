package wire

import (
	"errors"
	"fmt"

	"github.com/asdeliver/scheduler/store"
)

// Format is the body format version recorded with every stored transaction
// (store.Txn.Format). Body must produce the same bytes for the same items
// and format forever, so that a retried transaction is byte-identical: bump
// Format, and keep the old format's code, whenever Body's output for the
// same items would change.
const Format = 1

// ErrUnknownFormat is matched by the error Body returns for a format version
// it cannot produce: a transaction stored by a newer build, or a corrupt
// record.
var ErrUnknownFormat = errors.New("wire: unknown body format")

// ErrInvalidItem is matched by the error Body returns for an item it cannot
// put into a body: a kind it does not know, or data that is not a JSON
// object.
var ErrInvalidItem = errors.New("wire: invalid item")

// The fixed parts of a format 1 body.
const (
	eventsOpen = `{"events":[`
	bodyClose  = `]}`
)

// Body assembles the body of a transaction from its stored items:
// {"events":[<data>,<data>,...]} with the Data of every store.KindEvent
// item, in order. The "events" key is always present ("[]" when items is
// empty: one AS framework rejects a body without it).
//
// Item data is copied verbatim, never decoded and re-encoded, so the result
// depends only on format and the items: same items, same bytes. Body trusts
// that Data is the JSON object validated when the event was enqueued; it
// checks only that the first and last non-space bytes are '{' and '}', so
// that an empty or obviously damaged item fails here (ErrInvalidItem)
// instead of producing a body no AS can parse. A kind Body does not know
// also fails with ErrInvalidItem, and a format other than Format with
// ErrUnknownFormat. Body allocates once.
func Body(format int, items []store.Item) ([]byte, error) {
	if format != Format {
		return nil, fmt.Errorf("%w %d (this build writes format %d)", ErrUnknownFormat, format, Format)
	}
	n := len(eventsOpen) + len(bodyClose)
	for i := range items {
		it := &items[i]
		if it.Kind != store.KindEvent {
			return nil, fmt.Errorf("%w: item %d (seq %d) has unknown kind %d", ErrInvalidItem, i, it.Seq, it.Kind)
		}
		if !isObject(it.Data) {
			return nil, fmt.Errorf("%w: item %d (seq %d) is not a JSON object", ErrInvalidItem, i, it.Seq)
		}
		n += len(it.Data) + 1 // the data and a comma
	}
	if len(items) > 0 {
		n-- // no comma after the last item
	}
	b := make([]byte, 0, n)
	b = append(b, eventsOpen...)
	for i := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, items[i].Data...)
	}
	b = append(b, bodyClose...)
	return b, nil
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
