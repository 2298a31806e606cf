package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/asdeliver/scheduler/store"
)

// appendPlan is an Append call checked and encoded on the caller's
// goroutine, before the writer decides what is already pending.
type appendPlan struct {
	entries []*store.Entry
	takers  [][]string // per entry, its services, without repeats in the call
	sums    []uint64   // per entry, the sum of its kind and key (if keyed)
	// encoded are the batches of every entry: the writer encodes them
	// again only when it drops entries.
	encoded []encodedBatch
}

// pendingKey is a service's kind and key, to catch repeats within a call.
type pendingKey struct {
	service string
	kind    store.Kind
	key     string
}

// planAppend checks entries and drops the repeats within the call: a
// service named twice for one entry, an entry whose kind and key an
// earlier one already queues for a service.
func (s *Store) planAppend(entries []store.Entry) (*appendPlan, error) {
	plan := &appendPlan{}
	var seen map[pendingKey]bool
	for i := range entries {
		e := &entries[i]
		if len(e.Data) == 0 {
			return nil, invalid("entry %d (key %q): item has no data", i, e.Key)
		}
		if len(e.Services) == 0 {
			return nil, invalid("entry %d (key %q): no services: list at least one", i, e.Key)
		}
		takers := slices.Compact(slices.Sorted(slices.Values(e.Services)))
		if takers[0] == "" {
			return nil, invalid("entry %d (key %q): empty service ID", i, e.Key)
		}
		var sum uint64
		if e.Key != "" {
			if seen == nil {
				seen = make(map[pendingKey]bool)
			}
			takers = slices.DeleteFunc(takers, func(svc string) bool {
				k := pendingKey{svc, e.Kind, e.Key}
				dup := seen[k]
				seen[k] = true
				return dup
			})
			if len(takers) == 0 {
				continue
			}
			sum = keySum(s.keySeed, e.Kind, e.Key)
		}
		plan.entries = append(plan.entries, e)
		plan.takers = append(plan.takers, takers)
		plan.sums = append(plan.sums, sum)
	}
	plan.encoded = encodeBatches(plan.entries)
	return plan, nil
}

// Append implements store.Store. The call's items become a row of the
// batches table (or a few, for a large call), and each service that takes
// some of a batch gets one queue row that lists which: a few rows whatever
// the number of items. Entries whose kind and key a service has pending
// are found in memory (see pendingKeys), without an index of keys in the
// file. Under Options.MaxSize, a call that would fill more than the cap
// allows for queued items fails with ErrFull and stores nothing.
func (s *Store) Append(ctx context.Context, entries []store.Entry) error {
	return s.AppendOrdered(ctx, entries, nil)
}

// AppendOrdered implements store.OrderedAppender: it is Append, calling
// queued once the call waits in the writer's queue, whose calls run in
// the order they were queued.
func (s *Store) AppendOrdered(ctx context.Context, entries []store.Entry, queued func()) error {
	const op = "error appending items"
	release, err := s.enter(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer release()
	plan, err := s.planAppend(entries)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(plan.entries) == 0 {
		return nil
	}
	work := func(ctx context.Context, tx *sql.Tx) error { return s.appendTx(ctx, tx, plan) }
	if err := s.write(&request{ctx: ctx, work: work}, queued); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// appendTx is the writer's part of Append: drop what services have
// pending, then store the batches and their queue rows.
func (s *Store) appendTx(ctx context.Context, tx *sql.Tx, plan *appendPlan) error {
	mem := s.w.mem
	first := mem.nextSeq
	var (
		kept     []*store.Entry       // the entries stored, in order
		services []string             // the services that take some, in first-seen order
		picks    = map[string][]int{} // per service, the indexes of kept it takes
		keyed    []keyRef             // the keyed items queued, and for whom:
		keyedSvc []string
	)
	for i, e := range plan.entries {
		idx := len(kept)
		seq := first + int64(idx)
		took := false
		for _, svc := range plan.takers[i] {
			if e.Key != "" {
				// planAppend dropped the repeats within the call: only an
				// earlier call's items can be pending with this key.
				sum := plan.sums[i]
				pending, err := s.pendingKey(ctx, tx, svc, sum, e)
				if err != nil {
					return err
				}
				if pending {
					continue
				}
				if !mem.keys.svcs[svc].holds(seq) {
					return refuse(fmt.Errorf("service %q has had an item pending for four billion appends: deliver or purge it first", svc))
				}
				keyed = append(keyed, keyRef{seq, sum})
				keyedSvc = append(keyedSvc, svc)
			}
			if _, ok := picks[svc]; !ok {
				services = append(services, svc)
			}
			picks[svc] = append(picks[svc], idx)
			took = true
		}
		if took {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	batches := plan.encoded
	if len(kept) < len(plan.entries) {
		batches = encodeBatches(kept)
	}
	size := 0
	for _, b := range batches {
		size += len(b.keys) + len(b.data)
	}
	if err := s.checkRoom(ctx, tx, size, len(batches)*len(services)); err != nil {
		return err
	}
	now := s.now().UnixNano()
	insertBatch, insertQueue := tx.StmtContext(ctx, s.st.insertBatch), tx.StmtContext(ctx, s.st.insertQueue)
	for _, b := range batches {
		if err := writeBatch(ctx, insertBatch, insertQueue, first, b, services, picks, now); err != nil {
			return err
		}
		mem.batches.add(first+int64(b.to)-1, &cachedBatch{b.to - b.from, b.keys, b.data})
	}
	for _, svc := range services {
		if _, err := tx.StmtContext(ctx, s.st.addQueued).ExecContext(ctx, svc, len(picks[svc])); err != nil {
			return fmt.Errorf("counting queued items of %q: %w", svc, err)
		}
	}
	mem.nextSeq = first + int64(len(kept))
	for i, r := range keyed {
		mem.keys.add(keyedSvc[i], r.seq, r.sum)
	}
	return nil
}

// writeBatch stores batch b of a call whose first item gets seq first
// with the statements of insertBatchSQL and insertQueueSQL (prepared in
// tx), and a queue row for each of services that takes some of it: picks
// are their indexes into the call's items, ascending. Append and the
// conversion from the per-item schemas both store batches through it.
func writeBatch(ctx context.Context, insertBatch, insertQueue *sql.Stmt, first int64, b encodedBatch, services []string, picks map[string][]int, created int64) error {
	n, last := b.to-b.from, first+int64(b.to)-1
	type row struct {
		service string
		idx     []int // in the batch
	}
	var rows []row
	for _, svc := range services {
		all := picks[svc]
		lo, _ := slices.BinarySearch(all, b.from)
		hi, _ := slices.BinarySearch(all, b.to)
		if lo == hi {
			continue
		}
		idx := make([]int, hi-lo)
		for j, i := range all[lo:hi] {
			idx[j] = i - b.from
		}
		rows = append(rows, row{svc, idx})
	}
	if _, err := insertBatch.ExecContext(ctx, last, n, len(rows), created, b.keys, b.data); err != nil {
		return fmt.Errorf("storing items: %w", err)
	}
	for _, r := range rows {
		lastTaken := last - int64(n-1-r.idx[len(r.idx)-1])
		if _, err := insertQueue.ExecContext(ctx, r.service, lastTaken, last, encodePicks(r.idx, n)); err != nil {
			return fmt.Errorf("queueing items for %q: %w", r.service, err)
		}
	}
	return nil
}

// pendingKey reports whether e's kind and key, whose sum is sum, are
// pending for service: whether one of the items the sum names has them.
func (s *Store) pendingKey(ctx context.Context, tx *sql.Tx, service string, sum uint64, e *store.Entry) (found bool, err error) {
	s.w.mem.keys.svcs[service].each(sum, func(seq int64) bool {
		var last int64
		var n int
		var keys []byte
		err = tx.StmtContext(ctx, s.st.batchOf).QueryRowContext(ctx, seq).Scan(&last, &n, &keys)
		if errors.Is(err, sql.ErrNoRows) {
			err = nil // gone: not pending
		} else if err == nil {
			want := int(seq - (last - int64(n) + 1))
			err = walkKeys(keys, n, func(i int, kind store.Kind, key []byte, _, _ int) bool {
				found = i == want && kind == e.Kind && string(key) == e.Key
				return i < want
			})
		}
		return !found && err == nil
	})
	if err != nil {
		return false, fmt.Errorf("checking a pending key: %w", err)
	}
	return found, nil
}
