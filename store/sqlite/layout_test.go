package sqlite

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

func TestBatchRoundTrip(t *testing.T) {
	entries := []*store.Entry{
		{Item: store.Item{Kind: store.KindEvent, Key: "$a", Data: []byte(`{"a":1}`)}},
		{Item: store.Item{Kind: store.KindToDevice, Data: []byte(`{"to_device":2}`)}},
		{Item: store.Item{Kind: store.KindEphemeral, Key: "$c", Data: []byte(`{"c":3}`)}},
	}
	keys, data := encodeBatch(entries)
	const last = 102
	all, err := decodeBatch(last, 3, nil, keys, data)
	require.NoError(t, err)
	for i, it := range all {
		require.Equal(t, store.Item{Seq: 100 + int64(i), Kind: entries[i].Kind, Key: entries[i].Key, Data: entries[i].Data}, it)
	}
	some, err := decodeBatch(last, 3, encodePicks([]int{0, 2}, 3), keys, data)
	require.NoError(t, err)
	require.Equal(t, []store.Item{all[0], all[2]}, some)
	require.Nil(t, encodePicks([]int{0, 1, 2}, 3), "all items: no picks")

	_, err = decodeBatch(last, 4, nil, keys, data)
	require.ErrorIs(t, err, errCorrupt, "more items than stored")
	_, err = decodeBatch(last, 3, nil, keys, data[:5])
	require.ErrorIs(t, err, errCorrupt, "data cut short")
	_, err = decodeBatch(last, 3, []byte{2, 0}, keys, data)
	require.ErrorIs(t, err, errCorrupt, "a pick past the batch")
}

func TestCutBatches(t *testing.T) {
	small := &store.Entry{Item: store.Item{Data: make([]byte, 10)}}
	big := &store.Entry{Item: store.Item{Data: make([]byte, batchMaxBytes)}}
	entries := make([]*store.Entry, 0, 300)
	for range 300 {
		entries = append(entries, small)
	}
	require.Equal(t, [][2]int{{0, 128}, {128, 256}, {256, 300}}, cuts(entries))
	require.Equal(t, [][2]int{{0, 1}, {1, 2}, {2, 3}}, cuts([]*store.Entry{small, big, small}),
		"a large item has a batch of its own")
	require.Empty(t, cuts(nil))
}

// cuts returns the bounds of the batches encodeBatches cuts entries into.
func cuts(entries []*store.Entry) [][2]int {
	var out [][2]int
	for _, b := range encodeBatches(entries) {
		out = append(out, [2]int{b.from, b.to})
	}
	return out
}

// FuzzDecodeBatch feeds stored bytes, as a damaged file could hold them,
// to the decoders: they return items or an error matching errCorrupt,
// and never panic nor return data past the data column.
func FuzzDecodeBatch(f *testing.F) {
	keys, data := encodeBatch([]*store.Entry{
		{Item: store.Item{Kind: store.KindEvent, Key: "$a", Data: []byte("one")}},
		{Item: store.Item{Kind: store.KindToDevice, Data: []byte("two")}},
	})
	f.Add(2, []byte(nil), keys, data)
	f.Add(2, []byte{1}, keys, data)
	f.Add(3, []byte{0, 0}, keys, data[:4])
	f.Add(1, []byte{}, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}, data)
	f.Fuzz(func(t *testing.T, n int, picks, keys, data []byte) {
		if n < 0 || n > 1<<16 {
			return
		}
		items, err := decodeBatch(1<<20, n, picks, keys, data)
		if err != nil {
			require.ErrorIs(t, err, errCorrupt)
			return
		}
		for _, it := range items {
			require.LessOrEqual(t, len(it.Data), len(data))
		}
		err = eachItem(1<<20, n, picks, keys, data, func(int64, store.Kind, []byte, []byte) bool { return true })
		require.NoError(t, err, "eachItem agrees with decodeBatch")
	})
}

// decodeBatch returns the items that picks lists (nil: all) of a batch
// whose last seq is last, in seq order. Their Data share the data slice.
func decodeBatch(last int64, n int, picks, keys, data []byte) ([]store.Item, error) {
	size := n
	if picks != nil {
		size = min(n, len(picks))
	}
	items := make([]store.Item, 0, size)
	err := eachItem(last, n, picks, keys, data, func(seq int64, kind store.Kind, key, data []byte) bool {
		items = append(items, store.Item{Seq: seq, Kind: kind, Key: string(key), Data: data})
		return true
	})
	return items, err
}
