package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"hash/maphash"

	"github.com/asdeliver/scheduler/store"
)

// memory is what the writer keeps of the file. Built from the file at Open
// and after SQLite undid calls (Store.commit), and changed by each call
// once its writes have succeeded, it is exact or absent, never patched.
type memory struct {
	nextSeq int64
	keys    pendingKeys
	batches recentBatches
}

// pendingKeys deduplicates Append without an index write per item: per
// service, the seq of each pending keyed item (queued, or in a stored
// transaction) by a 64-bit sum of its kind and key (keySum). A sum says
// only "maybe": Append confirms a hit against the item. The sums are
// seeded at random per Open, so no one can choose keys that collide.
type pendingKeys struct {
	svcs map[string]*keyTable // nil tables are empty
	// txns are, per service and stored transaction, its keyed items:
	// Complete forgets them without reading them back.
	txns map[string]map[int64][]keyRef
}

func newPendingKeys() pendingKeys {
	return pendingKeys{svcs: make(map[string]*keyTable), txns: make(map[string]map[int64][]keyRef)}
}

// formed records the keyed items of transaction id of service.
func (p *pendingKeys) formed(service string, id int64, items []store.Item, seed maphash.Seed) {
	var refs []keyRef
	for _, it := range items {
		if it.Key != "" {
			refs = append(refs, keyRef{it.Seq, keySum(seed, it.Kind, it.Key)})
		}
	}
	if refs != nil {
		p.inTxn(service, id, refs...)
	}
}

// inTxn records refs as keyed items of transaction id of service.
func (p *pendingKeys) inTxn(service string, id int64, refs ...keyRef) {
	m := p.txns[service]
	if m == nil {
		m = make(map[int64][]keyRef)
		p.txns[service] = m
	}
	m[id] = append(m[id], refs...)
}

// completed forgets transaction id of service and its keyed items, which
// are no longer pending.
func (p *pendingKeys) completed(service string, id int64) {
	m, t := p.txns[service], p.svcs[service]
	for _, k := range m[id] {
		if t != nil {
			t.remove(k.sum, k.seq)
		}
	}
	delete(m, id)
	if len(m) == 0 {
		delete(p.txns, service)
	}
	if t != nil && t.n == 0 {
		delete(p.svcs, service) // gives the table's memory back
	}
}

// keySum returns the sum of kind and key under the Store's seed.
func keySum(seed maphash.Seed, kind store.Kind, key string) uint64 {
	return maphash.String(seed, key) ^ uint64(kind)*0x9e3779b97f4a7c15
}

// keySumBytes is keySum of a key held as bytes.
func keySumBytes(seed maphash.Seed, kind store.Kind, key []byte) uint64 {
	return maphash.Bytes(seed, key) ^ uint64(kind)*0x9e3779b97f4a7c15
}

// add records a keyed item queued for service.
func (p *pendingKeys) add(service string, seq int64, sum uint64) {
	t := p.svcs[service]
	if t == nil {
		t = &keyTable{}
		p.svcs[service] = t
	}
	t.add(sum, seq)
}

// drop forgets every key of service.
func (p *pendingKeys) drop(service string) {
	delete(p.svcs, service)
	delete(p.txns, service)
}

// keyRef is a keyed item of a service: its seq and sum.
type keyRef struct {
	seq int64
	sum uint64
}

// querier is what loadMemory reads through: the writer's connection at
// Open, its transaction after a rollback.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// loadMemory builds the writer's memory from the file: the next seq, and
// the keys of the items each service has pending, that is above the
// highest seq it has completed (below its oldest stored transaction, or
// else all it has bound), with those of each stored transaction.
func loadMemory(ctx context.Context, q querier, seed maphash.Seed) (*memory, error) {
	m := &memory{keys: newPendingKeys()}
	if err := q.QueryRowContext(ctx, `SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'batches'), 0)`).
		Scan(&m.nextSeq); err != nil {
		return nil, fmt.Errorf("reading the last seq: %w", err)
	}
	m.nextSeq++
	type txnRange struct{ id, first, last int64 }
	stored := make(map[string][]txnRange) // per service, in order
	rows, err := q.QueryContext(ctx, `SELECT service, id, first_seq, last_seq FROM txns ORDER BY service, id`)
	if err == nil {
		err = scanRows(rows, func() error {
			var svc string
			var r txnRange
			err := rows.Scan(&svc, &r.id, &r.first, &r.last)
			stored[svc] = append(stored[svc], r)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("reading stored transactions: %w", err)
	}
	floors := make(map[string]int64)
	rows, err = q.QueryContext(ctx, `SELECT service, bound_seq FROM services`)
	if err == nil {
		err = scanRows(rows, func() error {
			var svc string
			var bound int64
			err := rows.Scan(&svc, &bound)
			floors[svc] = bound
			if t := stored[svc]; len(t) > 0 {
				floors[svc] = t[0].first - 1
			}
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("reading what services completed: %w", err)
	}
	rows, err = q.QueryContext(ctx, `SELECT q.service, q.batch, q.picks, b.n, b.keys
		FROM queue AS q JOIN batches AS b ON b.seq = q.batch ORDER BY q.service, q.last`)
	if err == nil {
		err = scanRows(rows, func() error {
			var svc string
			var batch int64
			var n int
			var picks, keys []byte
			if err := rows.Scan(&svc, &batch, &picks, &n, &keys); err != nil {
				return err
			}
			floor, txns := floors[svc], stored[svc]
			err := eachItem(batch, n, picks, keys, nil, func(seq int64, kind store.Kind, key, _ []byte) bool {
				if len(key) == 0 || seq <= floor {
					return true
				}
				sum := keySumBytes(seed, kind, key)
				m.keys.add(svc, seq, sum)
				for len(txns) > 0 && txns[0].last < seq {
					txns = txns[1:]
				}
				if len(txns) > 0 && txns[0].first <= seq {
					m.keys.inTxn(svc, txns[0].id, keyRef{seq, sum})
				}
				return true
			})
			stored[svc] = txns
			if err != nil {
				return fmt.Errorf("batch %d of %q: %w", batch, svc, err)
			}
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("reading pending keys: %w", err)
	}
	return m, nil
}
