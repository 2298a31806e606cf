package sqlite

// recentBatches keeps the columns of the batches the writer stored last,
// up to recentBatchesBytes, and of the one it read last, so that NextTxn
// takes the items Append has just stored without reading them back: under
// load a transaction is formed from items that arrived during the last
// PUT. A batch's columns never change and its seq is never reused, so a
// copy is exact for as long as the batch exists, and once it is deleted no
// queue row names it again. Copies go when newer ones push them out, and
// with the rest of the writer's memory when SQLite undoes calls.
type recentBatches struct {
	m     map[int64]*cachedBatch
	order []int64 // the seqs of m, oldest first
	bytes int
	// read is the last batch read from the file, for the transaction
	// that takes the rest of it: a backlog read back is not kept beyond.
	read    *cachedBatch
	readSeq int64
}

// recentBatchesBytes bounds the bytes of the batches kept: the items of
// about one PUT of each of ten services, with room to spare.
const recentBatchesBytes = 8 << 20

// cachedBatch is a batch's columns.
type cachedBatch struct {
	n          int
	keys, data []byte
}

func (c *recentBatches) get(seq int64) (*cachedBatch, bool) {
	if c.read != nil && c.readSeq == seq {
		return c.read, true
	}
	b, ok := c.m[seq]
	return b, ok
}

// readBack keeps b, read from the file as batch seq, until the next.
func (c *recentBatches) readBack(seq int64, b *cachedBatch) {
	c.read, c.readSeq = b, seq
}

// add keeps b as batch seq, just stored (seqs come in increasing order),
// and drops the oldest batches beyond the bound.
func (c *recentBatches) add(seq int64, b *cachedBatch) {
	size := len(b.keys) + len(b.data)
	if size > recentBatchesBytes/4 {
		return
	}
	if c.m == nil {
		c.m = make(map[int64]*cachedBatch)
	}
	c.m[seq] = b
	c.order = append(c.order, seq)
	for c.bytes += size; c.bytes > recentBatchesBytes; c.order = c.order[1:] {
		old := c.m[c.order[0]]
		c.bytes -= len(old.keys) + len(old.data)
		delete(c.m, c.order[0])
	}
}
