package sqlite

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRecentBatchesStayBounded adds batches as Append does: the bytes kept
// stay within recentBatchesBytes, the oldest are pushed out first, and the
// last one read back is kept beside them.
func TestRecentBatchesStayBounded(t *testing.T) {
	var c recentBatches
	const size = 64 << 10
	for seq := int64(1); seq <= 1_000; seq++ {
		c.add(seq, &cachedBatch{n: 1, data: make([]byte, size)})
		require.LessOrEqual(t, c.bytes, recentBatchesBytes)
	}
	require.Equal(t, recentBatchesBytes/size, len(c.m))
	require.Len(t, c.order, len(c.m))
	_, ok := c.get(1_000 - int64(len(c.m)))
	require.False(t, ok, "pushed out")
	b, ok := c.get(1_000 - int64(len(c.m)) + 1)
	require.True(t, ok)
	require.Len(t, b.data, size)

	c.readBack(3, &cachedBatch{n: 2})
	b, ok = c.get(3)
	require.True(t, ok)
	require.Equal(t, 2, b.n)
	c.add(1_001, &cachedBatch{n: 1, data: make([]byte, recentBatchesBytes)})
	_, ok = c.get(1_001)
	require.False(t, ok, "a batch larger than a quarter of the bound is not kept")
}
