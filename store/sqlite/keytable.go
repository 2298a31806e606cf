package sqlite

// keyTable is a set of (sum, seq) pairs of one service, looked up by sum:
// open addressing with linear probing over two arrays, 12 bytes a slot, so
// a million keys take about 24 MiB, not the 36 of a Go map. Pairs with the
// same sum may coexist: a lookup returns each, and Append confirms them
// against the stored items, so keys whose sums collide both stay guarded.
//
// seqs holds seq-base+1 (0: an empty slot), so every seq lies in [base,
// base+maxSpan]; holds moves the base up as the seqs move on. Append
// refuses a key the table cannot hold: a service with an item pending
// while four billion others were appended.
type keyTable struct {
	sums []uint64
	seqs []uint32
	base int64 // at most the smallest seq held
	hi   int64 // at least the largest seq held
	n    int
}

// keyTableMinSlots is the size of a new table: a power of two.
const keyTableMinSlots = 8

// slot returns the first slot to probe for sum.
func (t *keyTable) slot(sum uint64) int {
	// The sums are uniform already (seeded maphash).
	return int(sum & uint64(len(t.sums)-1))
}

// each calls fn with the seq of each pair with sum sum, until fn returns
// false.
func (t *keyTable) each(sum uint64, fn func(seq int64) bool) {
	if t == nil || t.n == 0 {
		return
	}
	mask := len(t.sums) - 1
	for i := t.slot(sum); t.seqs[i] != 0; i = (i + 1) & mask {
		if t.sums[i] == sum && !fn(t.base+int64(t.seqs[i])-1) {
			return
		}
	}
}

// maxSpan is how far apart the seqs of one table may be.
const maxSpan = 1<<32 - 2

// holds reports whether the table can take a pair of seq: the span of its
// seqs stays within maxSpan. It may move the base up to the smallest seq
// held to make room.
func (t *keyTable) holds(seq int64) bool {
	if t == nil || t.n == 0 || max(t.hi, seq)-min(t.base, seq) <= maxSpan {
		return true
	}
	lo, hi := t.bounds()
	t.rebase(lo)
	t.hi = hi
	return max(hi, seq)-min(lo, seq) <= maxSpan
}

// add adds the pair (sum, seq), which the table holds.
func (t *keyTable) add(sum uint64, seq int64) {
	if len(t.sums) == 0 {
		t.resize(keyTableMinSlots)
	}
	if t.n == 0 {
		t.base, t.hi = seq, seq
	}
	if seq < t.base {
		t.rebase(seq)
	}
	t.hi = max(t.hi, seq)
	if (t.n+1)*5 > len(t.sums)*4 { // load above 0.8
		t.resize(2 * len(t.sums))
	}
	t.put(sum, uint32(seq-t.base+1))
	t.n++
}

func (t *keyTable) put(sum uint64, stored uint32) {
	mask := len(t.sums) - 1
	i := t.slot(sum)
	for t.seqs[i] != 0 {
		i = (i + 1) & mask
	}
	t.sums[i], t.seqs[i] = sum, stored
}

// remove removes the pair (sum, seq), if present, and reports whether it
// was.
func (t *keyTable) remove(sum uint64, seq int64) bool {
	if t.n == 0 || seq < t.base || seq-t.base > maxSpan {
		return false
	}
	stored := uint32(seq - t.base + 1)
	mask := len(t.sums) - 1
	i := t.slot(sum)
	for ; t.seqs[i] != 0; i = (i + 1) & mask {
		if t.sums[i] == sum && t.seqs[i] == stored {
			break
		}
	}
	if t.seqs[i] == 0 {
		return false
	}
	// Backward-shift deletion: so that no lookup stops early, move later
	// pairs of the run into the hole when their probe would pass it.
	for j := (i + 1) & mask; t.seqs[j] != 0; j = (j + 1) & mask {
		home := t.slot(t.sums[j])
		if (j-home)&mask >= (j-i)&mask {
			t.sums[i], t.seqs[i] = t.sums[j], t.seqs[j]
			i = j
		}
	}
	t.sums[i], t.seqs[i] = 0, 0
	t.n--
	// No shrinking, which would copy while a drain has the most in use:
	// the table goes once empty (pendingKeys).
	return true
}

// resize moves the pairs to a table of slots slots.
func (t *keyTable) resize(slots int) {
	sums, seqs := t.sums, t.seqs
	t.sums, t.seqs = make([]uint64, slots), make([]uint32, slots)
	for i, s := range seqs {
		if s != 0 {
			t.put(sums[i], s)
		}
	}
}

// bounds returns the smallest and largest seq held; the table is not
// empty.
func (t *keyTable) bounds() (lo, hi int64) {
	first := true
	for _, s := range t.seqs {
		if s != 0 {
			v := t.base + int64(s) - 1
			if first {
				lo, hi, first = v, v, false
			}
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	return lo, hi
}

// rebase makes lo, at most the smallest seq held, the base.
func (t *keyTable) rebase(lo int64) {
	for i, s := range t.seqs {
		if s != 0 {
			t.seqs[i] = uint32(t.base + int64(s) - lo)
		}
	}
	t.base = lo
}
