package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/asdeliver/scheduler/store"
)

// The keys of recently appended items are not written to the pending
// table one Append at a time: the table is ordered by hash, so each
// Append's keys landed on as many pages of it as it had keys, and a
// growing backlog made every Append rewrite about a page per item. The
// writer keeps them in memory instead (recentKeys), and writes them to the
// pending table in one sorted batch once there are recentMax of them. The
// keys of items delivered before that never reach the table, which is the
// common case while services keep up.
//
// The file still says everything: the pending table holds the keys of
// every keyed, pending item up to the seq of its newest row, and the keys
// of the items above that seq are those of the queued items themselves.
// So Open, and the writer after SQLite undid calls whose changes the
// memory had already taken, read the recent keys back from the queue.
//
// A hit in memory, like a hit in the table, is confirmed against the
// queued item before an Append drops an entry as a duplicate, so a wrong
// recent key could cost a duplicate, never an item.

// recentMax is how many recent keys the writer keeps before it writes
// them to the pending table: about 4 MiB with 44-byte event IDs, 11 MiB
// with keys of 255 bytes, the longest event ID the Matrix spec allows.
// Each key is a copy of its own (copyItems).
const recentMax = 32768

// recentKeys are the keys of keyed, pending items that are in the queue
// but not in the pending table. They are owned by the writer goroutine.
type recentKeys struct {
	loaded bool // false: read them back from the file before use
	max    int  // recentMax, lower in tests
	// inTable is false while the pending table is known to be empty, as
	// it stays while services keep up: Append then need not look there.
	inTable bool

	bySeq map[string][]recentKey // per service, in seq order
	byKey map[pendingKey]int64   // the seq of each
	n     int
}

// recentKey is the key of one item queued for a service.
type recentKey struct {
	seq  int64
	kind store.Kind
	key  string
}

func newRecentKeys() *recentKeys {
	return &recentKeys{max: recentMax}
}

// forget marks the recent keys as unknown: SQLite undid changes they
// already hold. They are read back from the file before their next use.
func (r *recentKeys) forget() {
	r.loaded = false
	r.bySeq, r.byKey, r.n = nil, nil, 0
}

// loadRecent reads the recent keys back from the file if they are unknown: the
// keyed queue rows above the highest seq in the pending table.
func (s *Store) loadRecent(ctx context.Context, tx *sql.Tx) error {
	r := s.w.recent
	if r.loaded {
		return nil
	}
	var mark int64
	if err := tx.StmtContext(ctx, s.st.pendingMark).QueryRowContext(ctx).Scan(&mark); err != nil {
		return fmt.Errorf("reading recent keys: %w", err)
	}
	rows, err := tx.StmtContext(ctx, s.st.recentItems).QueryContext(ctx, mark)
	if err != nil {
		return fmt.Errorf("reading recent keys: %w", err)
	}
	defer rows.Close()
	r.bySeq, r.byKey, r.n = make(map[string][]recentKey), make(map[pendingKey]int64), 0
	for rows.Next() {
		var svc string
		var k recentKey
		var kind int64
		if err := rows.Scan(&svc, &k.seq, &kind, &k.key); err != nil {
			return fmt.Errorf("reading recent keys: %w", err)
		}
		k.kind = store.Kind(kind)
		r.add(svc, k)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading recent keys: %w", err)
	}
	r.inTable = mark > 0 // seqs start at 1
	r.loaded = true
	return nil
}

// add records k, queued for service with a seq above all of its others.
func (r *recentKeys) add(service string, k recentKey) {
	r.bySeq[service] = append(r.bySeq[service], k)
	r.byKey[pendingKey{service, k.kind, k.key}] = k.seq
	r.n++
}

// lookup returns the seq under which kind and key are recent for service.
func (r *recentKeys) lookup(service string, kind store.Kind, key string) (int64, bool) {
	seq, ok := r.byKey[pendingKey{service, kind, key}]
	return seq, ok
}

// span returns where the keys of service with seqs in [first, last] are
// in its list.
func (r *recentKeys) span(service string, first, last int64) (from, to int) {
	keys := r.bySeq[service]
	from, _ = slices.BinarySearchFunc(keys, first, func(k recentKey, seq int64) int { return cmp.Compare(k.seq, seq) })
	to, _ = slices.BinarySearchFunc(keys, last+1, func(k recentKey, seq int64) int { return cmp.Compare(k.seq, seq) })
	return from, to
}

// count returns how many keys of service have seqs in [first, last].
func (r *recentKeys) count(service string, first, last int64) int {
	from, to := r.span(service, first, last)
	return to - from
}

// remove forgets the keys of service with seqs in [first, last]: their
// items have left the queue.
func (r *recentKeys) remove(service string, first, last int64) {
	from, to := r.span(service, first, last)
	if from == to {
		return
	}
	keys := r.bySeq[service]
	for _, k := range keys[from:to] {
		delete(r.byKey, pendingKey{service, k.kind, k.key})
	}
	r.n -= to - from
	if from == 0 {
		// Transactions complete oldest first: drop the front.
		clear(keys[:to])
		keys = keys[to:]
	} else {
		keys = slices.Delete(keys, from, to)
	}
	if len(keys) == 0 {
		delete(r.bySeq, service)
		return
	}
	r.bySeq[service] = keys
}

// drop forgets every key of service.
func (r *recentKeys) drop(service string) {
	for _, k := range r.bySeq[service] {
		delete(r.byKey, pendingKey{service, k.kind, k.key})
	}
	r.n -= len(r.bySeq[service])
	delete(r.bySeq, service)
}

// clear forgets every key, once they are all in the pending table.
func (r *recentKeys) clear() {
	clear(r.bySeq)
	clear(r.byKey)
	r.n = 0
}

// pendingRows returns the recent keys as rows of the pending table,
// sorted as the table is, so that writing them fills its pages in order.
func (r *recentKeys) pendingRows() []pendingRow {
	out := make([]pendingRow, 0, r.n)
	for svc, keys := range r.bySeq {
		for _, k := range keys {
			out = append(out, pendingRow{svc, keyHash(int64(k.kind), k.key), k.seq})
		}
	}
	return out
}

// pendingRow is a row of the pending table.
type pendingRow struct {
	service string
	h, seq  int64
}

// writePending inserts rows into the pending table, in its order. A row
// that is there already is left as it is.
func (s *Store) writePending(ctx context.Context, tx *sql.Tx, rows []pendingRow) error {
	s.w.recent.inTable = true // at worst needlessly, if the call fails
	slices.SortFunc(rows, func(a, b pendingRow) int {
		return cmp.Or(cmp.Compare(a.service, b.service), cmp.Compare(a.h, b.h), cmp.Compare(a.seq, b.seq))
	})
	args := make([]any, 0, 3*min(maxBatch, len(rows)))
	return eachBatch(len(rows), func(k, from, to int) error {
		args = args[:0]
		for _, r := range rows[from:to] {
			args = append(args, r.service, r.h, r.seq)
		}
		if _, err := tx.StmtContext(ctx, s.st.insertPending[k]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("recording pending keys: %w", err)
		}
		return nil
	})
}
