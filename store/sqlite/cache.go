package sqlite

// recentBatches keeps the columns of the batches the writer stored last,
// up to recentBatchesBytes, and of the one it read last, so that NextTxn
// takes the items Append has just stored without reading them back: under
// load a transaction is formed from items that arrived during the last PUT. A batch's columns
// never change once stored and its seq is never given to another, so a
// copy is exact for as long as the batch exists; it goes when the batch is
// deleted, when newer ones push it out, and with the rest of the writer's
// memory when SQLite undoes calls (see memory).
type recentBatches struct {
	m     map[int64]*cachedBatch
	order []int64 // seqs, oldest first; some may be gone from m
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
	c.bytes += size
	for c.bytes > recentBatchesBytes {
		c.drop(c.order[0])
		c.order = c.order[1:]
	}
	if len(c.order) > 2*len(c.m)+64 {
		// Most of order is gone already: keep it from growing.
		kept := c.order[:0]
		for _, s := range c.order {
			if _, ok := c.m[s]; ok {
				kept = append(kept, s)
			}
		}
		c.order = kept
	}
}

// drop forgets batch seq, if kept.
func (c *recentBatches) drop(seq int64) {
	if c.readSeq == seq {
		c.read = nil
	}
	if b, ok := c.m[seq]; ok {
		c.bytes -= len(b.keys) + len(b.data)
		delete(c.m, seq)
	}
}
