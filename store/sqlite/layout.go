package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/asdeliver/scheduler/store"
)

// An Append stores its items as one row of the batches table, whatever
// their number, and one row of the queue table per service that takes
// some of them: a handful of rows per call, not one per item and table.
//
// A batch holds n items with consecutive seqs; its row is keyed by the seq
// of the last one, so the first is seq-n+1. Its bytes are two columns:
//
//   - keys: per item, in seq order, its kind (one byte), the length of its
//     key (uvarint), the key, and the length of its data (uvarint);
//   - data: the items' data, concatenated in the same order.
//
// Keys come first and apart, so that Open reads the keys of the backlog to
// rebuild the pending keys (see pendingKeys) without its data.
//
// A queue row says which items of a batch a service takes: picks lists
// their indexes in the batch, ascending, each as the uvarint of its gap
// to the one before (the first: its index); NULL means every item.

// A call's items are cut into batches of at most batchMaxItems items and,
// beyond its first item, batchMaxBytes bytes of data: NextTxn reads whole
// batches to take a transaction's items, so a batch much larger than a
// transaction would be read, and copied, once per transaction it feeds.
const (
	batchMaxItems = 128
	batchMaxBytes = 64 << 10
)

// encodedBatch is a batch's bounds in a list of entries, and its columns.
type encodedBatch struct {
	from, to   int
	keys, data []byte
}

// encodeBatches cuts entries into batches and encodes them.
func encodeBatches(entries []*store.Entry) []encodedBatch {
	var out []encodedBatch
	from, size := 0, 0
	for i := range len(entries) + 1 {
		if i > from && (i == len(entries) || i-from == batchMaxItems || size+len(entries[i].Data) > batchMaxBytes) {
			keys, data := encodeBatch(entries[from:i])
			out = append(out, encodedBatch{from, i, keys, data})
			from, size = i, 0
		}
		if i < len(entries) {
			size += len(entries[i].Data)
		}
	}
	return out
}

// errCorrupt is wrapped by every error about stored bytes this package
// cannot decode.
var errCorrupt = errors.New("sqlite: stored batch is damaged")

// encodeBatch returns the keys and data columns of a batch of items.
func encodeBatch(items []*store.Entry) (keys, data []byte) {
	size, klen := 0, 0
	for _, e := range items {
		size += len(e.Data)
		klen += 1 + 2*binary.MaxVarintLen32 + len(e.Key)
	}
	keys = make([]byte, 0, klen)
	data = make([]byte, 0, size)
	for _, e := range items {
		keys = append(keys, byte(e.Kind))
		keys = binary.AppendUvarint(keys, uint64(len(e.Key)))
		keys = append(keys, e.Key...)
		keys = binary.AppendUvarint(keys, uint64(len(e.Data)))
		data = append(data, e.Data...)
	}
	return keys, data
}

// walkKeys calls fn with the index, kind and key of each of the n items
// of a batch's keys column, and where its data lies in the data column,
// in order, until fn returns false. key is only valid during the call.
func walkKeys(keys []byte, n int, fn func(i int, kind store.Kind, key []byte, from, to int) bool) error {
	off := 0
	for i := range n {
		if len(keys) < 1 {
			return fmt.Errorf("%w: %d items of %d", errCorrupt, i, n)
		}
		kind := store.Kind(keys[0])
		klen, w := binary.Uvarint(keys[1:])
		if w <= 0 || klen > uint64(len(keys)-1-w) {
			return fmt.Errorf("%w: key of item %d", errCorrupt, i)
		}
		key := keys[1+w : 1+w+int(klen)]
		keys = keys[1+w+int(klen):]
		dlen, w := binary.Uvarint(keys)
		if w <= 0 || dlen > 1<<40 {
			return fmt.Errorf("%w: data length of item %d", errCorrupt, i)
		}
		keys = keys[w:]
		if !fn(i, kind, key, off, off+int(dlen)) {
			return nil
		}
		off += int(dlen)
	}
	return nil
}

// eachItem calls fn with the seq, kind, key and data of each item that
// picks lists (nil: all) of a batch whose last seq is last, in order,
// until fn returns false. With data nil (the column not read), fn gets nil
// data; else an item whose data lies past the column is an error. key is
// only valid during the call.
func eachItem(last int64, n int, picks, keys, data []byte, fn func(seq int64, kind store.Kind, key, data []byte) bool) error {
	want, err := decodePicks(picks, n)
	if err != nil {
		return err
	}
	first, j := last-int64(n)+1, 0
	var bad error
	err = walkKeys(keys, n, func(i int, kind store.Kind, key []byte, from, to int) bool {
		if want != nil {
			if j == len(want) {
				return false
			}
			if want[j] != i {
				return true
			}
			j++
		}
		var d []byte
		if data != nil {
			if to > len(data) {
				bad = fmt.Errorf("%w: data of item %d", errCorrupt, i)
				return false
			}
			d = data[from:to:to]
		}
		return fn(first+int64(i), kind, key, d)
	})
	if err == nil {
		err = bad
	}
	return err
}

// encodePicks returns the picks column for the indexes idx (ascending) of
// a batch of n items: nil when idx lists them all.
func encodePicks(idx []int, n int) []byte {
	if len(idx) == n {
		return nil
	}
	out := make([]byte, 0, len(idx)+4)
	prev := -1
	for _, i := range idx {
		out = binary.AppendUvarint(out, uint64(i-prev-1))
		prev = i
	}
	return out
}

// decodePicks returns the indexes a picks column lists, nil for all.
func decodePicks(picks []byte, n int) ([]int, error) {
	if picks == nil {
		return nil, nil
	}
	idx := make([]int, 0, len(picks))
	prev := -1
	for len(picks) > 0 {
		gap, w := binary.Uvarint(picks)
		if w <= 0 || gap >= uint64(n-prev-1) {
			return nil, fmt.Errorf("%w: picks", errCorrupt)
		}
		prev += int(gap) + 1
		idx = append(idx, prev)
		picks = picks[w:]
	}
	return idx, nil
}
