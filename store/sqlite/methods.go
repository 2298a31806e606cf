package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// Append inserts rows in batches of 1<<k rows, k < batchLevels, one prepared
// statement per size: 256 rows of 4 parameters stay far below SQLite's limit
// of bound parameters, and any count is a sum of at most batchLevels sizes
// below 256 plus full batches.
const (
	batchLevels = 9
	maxBatch    = 1 << (batchLevels - 1)
)

// statements are the prepared statements of the methods, prepared once:
// those of the calls that only read (Txns, Backlogs) on the reader's
// connection, the others on the writer's.
type statements struct {
	all []*sql.Stmt

	// Append.
	insertItems   [batchLevels]*sql.Stmt // kind, key, data, created per row
	insertQueue   [batchLevels]*sql.Stmt // service, seq per row
	insertPending [batchLevels]*sql.Stmt // service, h, seq per row
	findPending   [batchLevels]*sql.Stmt // service, then the hashes
	pendingItem   *sql.Stmt
	addQueued     *sql.Stmt

	// Recent keys (Append, Complete): the highest seq in the pending
	// table, and the keyed queue rows above it.
	pendingMark *sql.Stmt
	recentItems *sql.Stmt

	// Leases.
	ensureService *sql.Stmt
	lease         *sql.Stmt
	grant         *sql.Stmt
	extend        *sql.Stmt
	release       *sql.Stmt
	epoch         *sql.Stmt

	// NextTxn.
	serviceForTxn *sql.Stmt
	queuedItems   *sql.Stmt
	insertTxn     *sql.Stmt
	bind          *sql.Stmt

	// Txns (reader).
	listTxns   *sql.Stmt
	rangeItems *sql.Stmt

	// Complete.
	txnRange       *sql.Stmt
	deleteTxnItems *sql.Stmt
	deleteTxnQueue *sql.Stmt
	deleteTxn      *sql.Stmt
	countStale     *sql.Stmt
	prunePending   *sql.Stmt
	resetStale     *sql.Stmt

	// Backlogs (reader).
	backlogs *sql.Stmt

	// Purge.
	purgeItems   *sql.Stmt
	purgeQueue   *sql.Stmt
	dropPending  *sql.Stmt
	purgeTxns    *sql.Stmt
	purgeService *sql.Stmt

	// Space: the free pages after a batch that freed some and after a
	// vacuum step, the pages in use after an Append under Options.MaxSize.
	freelistCount *sql.Stmt
	pagesInUse    *sql.Stmt
}

// valuesList returns n copies of a row of k placeholders: "(?, ?), (?, ?)".
func valuesList(n, k int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", k), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

// prepare prepares the statements of the calls that only read on rdb, the
// others on db.
func prepare(ctx context.Context, db, rdb *sql.DB) (*statements, error) {
	st := &statements{}
	var err error
	on := func(db *sql.DB, query string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = db.PrepareContext(ctx, query)
		if err != nil {
			err = fmt.Errorf("preparing %q: %w", query, err)
			return nil
		}
		st.all = append(st.all, s)
		return s
	}
	p := func(query string) *sql.Stmt { return on(db, query) }
	r := func(query string) *sql.Stmt { return on(rdb, query) }

	for k := range batchLevels {
		st.insertItems[k] = p(`INSERT INTO items (kind, key, data, created) VALUES ` + valuesList(1<<k, 4))
		st.insertQueue[k] = p(`INSERT INTO queue (service, seq) VALUES ` + valuesList(1<<k, 2))
		st.insertPending[k] = p(`INSERT OR IGNORE INTO pending (service, h, seq) VALUES ` + valuesList(1<<k, 3))
		st.findPending[k] = p(`SELECT h, seq FROM pending WHERE service = ? AND h IN ` + valuesList(1, 1<<k))
	}
	st.pendingItem = p(`SELECT i.kind, i.key FROM queue AS q JOIN items AS i ON i.seq = q.seq
		WHERE q.service = ? AND q.seq = ?`)
	st.pendingMark = p(`SELECT coalesce(max(seq), 0) FROM pending`)
	st.recentItems = p(`SELECT q.service, q.seq, i.kind, i.key FROM queue AS q JOIN items AS i ON i.seq = q.seq
		WHERE q.seq > ? AND i.key <> '' ORDER BY q.seq`)
	st.addQueued = p(`INSERT INTO services (service, queued) VALUES (?, ?)
		ON CONFLICT (service) DO UPDATE SET queued = queued + excluded.queued
		RETURNING queued`)

	st.ensureService = p(`INSERT INTO services (service) VALUES (?) ON CONFLICT (service) DO NOTHING`)
	st.lease = p(`SELECT lease_owner, lease_epoch, lease_expires, max_epoch FROM services WHERE service = ?`)
	st.grant = p(`UPDATE services SET lease_owner = ?, lease_epoch = ?, lease_expires = ?, max_epoch = ? WHERE service = ?`)
	st.extend = p(`UPDATE services SET lease_expires = ? WHERE service = ?`)
	st.release = p(`UPDATE services SET lease_owner = '', lease_epoch = 0, lease_expires = 0 WHERE service = ?`)
	st.epoch = p(`SELECT lease_epoch FROM services WHERE service = ?`)

	st.serviceForTxn = p(`SELECT lease_epoch, last_txn_id, bound_seq, queued FROM services WHERE service = ?`)
	st.queuedItems = p(`SELECT q.seq, i.kind, i.key, i.data
		FROM queue AS q JOIN items AS i ON i.seq = q.seq
		WHERE q.service = ? AND q.seq > ? ORDER BY q.seq LIMIT ?`)
	st.insertTxn = p(`INSERT INTO txns (service, id, format, hash, created, first_seq, last_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?)`)
	st.bind = p(`UPDATE services SET last_txn_id = ?, bound_seq = ?, queued = queued - ? WHERE service = ?`)

	st.listTxns = r(`SELECT id, format, hash, created, first_seq, last_seq
		FROM txns WHERE service = ? ORDER BY id LIMIT ?`)
	st.rangeItems = r(`SELECT q.seq, i.kind, i.key, i.data
		FROM queue AS q JOIN items AS i ON i.seq = q.seq
		WHERE q.service = ? AND q.seq BETWEEN ? AND ? ORDER BY q.seq`)
	st.txnRange = p(`SELECT first_seq, last_seq FROM txns WHERE service = ? AND id = ?`)
	st.deleteTxnItems = p(`DELETE FROM items
		WHERE seq IN (SELECT seq FROM queue WHERE service = ? AND seq BETWEEN ? AND ?)
		AND NOT EXISTS (SELECT 1 FROM queue AS o WHERE o.seq = items.seq AND o.service <> ?)`)
	st.deleteTxnQueue = p(`DELETE FROM queue WHERE service = ? AND seq BETWEEN ? AND ?`)
	st.deleteTxn = p(`DELETE FROM txns WHERE service = ? AND id = ?`)
	st.countStale = p(`UPDATE services SET dedup_stale = dedup_stale + ? WHERE service = ?
		RETURNING dedup_stale, queued`)
	st.prunePending = p(`DELETE FROM pending WHERE service = ? AND h BETWEEN ? AND ?
		AND NOT EXISTS (SELECT 1 FROM queue AS q WHERE q.service = pending.service AND q.seq = pending.seq)`)
	st.resetStale = p(`UPDATE services SET dedup_stale = 0 WHERE service = ?`)

	st.backlogs = r(`SELECT service, txns, queued, oldest FROM (
		SELECT s.service AS service,
			(SELECT count(*) FROM txns AS t WHERE t.service = s.service) AS txns,
			s.queued AS queued,
			(SELECT i.created FROM queue AS q JOIN items AS i ON i.seq = q.seq
				WHERE q.service = s.service ORDER BY q.seq LIMIT 1) AS oldest
		FROM services AS s)
		WHERE oldest IS NOT NULL ORDER BY service`)

	st.purgeItems = p(`DELETE FROM items
		WHERE seq IN (SELECT seq FROM queue WHERE service = ?)
		AND NOT EXISTS (SELECT 1 FROM queue AS o WHERE o.seq = items.seq AND o.service <> ?)`)
	st.purgeQueue = p(`DELETE FROM queue WHERE service = ?`)
	st.dropPending = p(`DELETE FROM pending WHERE service = ?`)
	st.purgeTxns = p(`DELETE FROM txns WHERE service = ?`)
	st.purgeService = p(`UPDATE services SET queued = 0, dedup_stale = 0 WHERE service = ?`)

	st.freelistCount = p(`PRAGMA freelist_count`)
	st.pagesInUse = p(`SELECT p.page_count - f.freelist_count FROM pragma_page_count() AS p, pragma_freelist_count() AS f`)

	if err != nil {
		_ = st.close()
		return nil, err
	}
	return st, nil
}

// close closes every prepared statement.
func (st *statements) close() error {
	var errs []error
	for _, s := range st.all {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// batchLevel returns k such that 1<<k is the largest batch size not above n.
func batchLevel(n int) int {
	if n >= maxBatch {
		return batchLevels - 1
	}
	return bits.Len(uint(n)) - 1
}

// eachBatch cuts n rows into batches of the prepared sizes, largest
// first, and calls fn with each batch's level k (1<<k rows) and bounds.
func eachBatch(n int, fn func(k, from, to int) error) error {
	for done := 0; done < n; {
		k := batchLevel(n - done)
		if err := fn(k, done, done+1<<k); err != nil {
			return err
		}
		done += 1 << k
	}
	return nil
}

// staleEpoch is the error for an epoch that is not the current one.
func staleEpoch(epoch store.Epoch) error {
	return fmt.Errorf("epoch %d is not the current lease epoch: %w", epoch, store.ErrStaleEpoch)
}

// invalid is the error for a broken precondition.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrInvalid, fmt.Sprintf(format, args...))
}

// checkEpoch fails with ErrStaleEpoch unless epoch is service's current
// lease epoch.
func (s *Store) checkEpoch(ctx context.Context, tx *sql.Tx, service string, epoch store.Epoch) error {
	var cur int64
	err := tx.StmtContext(ctx, s.st.epoch).QueryRowContext(ctx, service).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if cur == 0 || store.Epoch(cur) != epoch {
		return staleEpoch(epoch)
	}
	return nil
}

// appendPlan is what Append writes once the call is deduplicated: the items
// to store, in call order, and their queue rows.
type appendPlan struct {
	items    []*store.Entry
	rows     []queueRow
	services []string     // distinct services of rows, in first-seen order
	copies   []store.Item // what the writer may keep of each item (copyItems)
}

// copyItems copies what the writer may keep of the items, their Data for
// the tails and their Key for the tails and the recent keys: here, on the
// caller's goroutine rather than the writer's. Each item gets copies of
// its own, so that what the writer keeps of one item never holds on to
// the memory of others (nor a key to the whole event it was cut from).
func (p *appendPlan) copyItems() {
	p.copies = make([]store.Item, len(p.items))
	for i, e := range p.items {
		p.copies[i] = store.Item{Kind: e.Kind, Key: strings.Clone(e.Key), Data: bytes.Clone(e.Data)}
	}
}

// queueRow queues items[item] of a plan for service. h is keyHash of the
// item's kind and key, for keyed items.
type queueRow struct {
	item    int
	service string
	h       int64
}

// pendingKey identifies a deduplicated item of a service.
type pendingKey struct {
	service string
	kind    store.Kind
	key     string
}

// planAppend validates entries and drops, within the call, a second entry
// with the same kind and key for a service, a service listed twice for one
// entry, and an entry left with no service.
func planAppend(entries []store.Entry) (*appendPlan, error) {
	plan := &appendPlan{}
	listed := make(map[string]struct{}) // plan.services
	var seen map[pendingKey]struct{}
	for i := range entries {
		e := &entries[i]
		if len(e.Data) == 0 {
			return nil, invalid("entry %d (key %q): item has no data", i, e.Key)
		}
		if len(e.Services) == 0 {
			return nil, invalid("entry %d (key %q): no services: list at least one", i, e.Key)
		}
		start := len(plan.rows)
		var mine map[string]struct{} // this entry's services, for long lists
		if e.Key == "" && len(e.Services) > 16 {
			mine = make(map[string]struct{}, len(e.Services))
		}
		for _, svc := range e.Services {
			if svc == "" {
				return nil, invalid("entry %d (key %q): empty service ID", i, e.Key)
			}
			if e.Key != "" {
				// One map catches both a repeat within this entry and an
				// earlier entry with the same kind and key.
				k := pendingKey{svc, e.Kind, e.Key}
				if seen == nil {
					seen = make(map[pendingKey]struct{})
				}
				if _, dup := seen[k]; dup {
					continue
				}
				seen[k] = struct{}{}
			} else if mine != nil {
				if _, dup := mine[svc]; dup {
					continue
				}
				mine[svc] = struct{}{}
			} else if containsService(plan.rows[start:], svc) {
				continue
			}
			row := queueRow{item: len(plan.items), service: svc}
			if e.Key != "" {
				row.h = keyHash(int64(e.Kind), e.Key)
			}
			plan.rows = append(plan.rows, row)
			if _, ok := listed[svc]; !ok {
				listed[svc] = struct{}{}
				plan.services = append(plan.services, svc)
			}
		}
		if len(plan.rows) > start {
			plan.items = append(plan.items, e)
		}
	}
	return plan, nil
}

func containsService(rows []queueRow, svc string) bool {
	for _, r := range rows {
		if r.service == svc {
			return true
		}
	}
	return false
}

// Append implements store.Store. The call is atomic (a savepoint in the
// writer's SQLite transaction): it drops the entries a service already has
// pending, looking their keys up among the recent keys and then, by hash,
// in the pending table, and inserts the items that a service still takes
// and their queue rows in batched inserts. Their keys join the recent
// keys, which reach the pending table in sorted batches (see recentKeys).
// Under Options.MaxSize, a call that would fill more than the cap allows
// for queued items fails with ErrFull and stores nothing.
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
	plan, err := planAppend(entries)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(plan.items) == 0 {
		return nil
	}
	plan.copyItems()
	if err := s.writeThen(ctx, false, func(ctx context.Context, tx *sql.Tx) error { return s.appendTx(ctx, tx, plan) }, queued); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (s *Store) appendTx(ctx context.Context, tx *sql.Tx, plan *appendPlan) error {
	if err := s.loadRecent(ctx, tx); err != nil {
		return err
	}
	pending, err := s.alreadyPending(ctx, tx, plan)
	if err != nil {
		return err
	}
	// The rows to queue, the keyed ones among them, and per item and per
	// service how many there are: an item is stored if a service takes it.
	rows := make([]queueRow, 0, len(plan.rows))
	var keyed []queueRow
	takers := make([]int, len(plan.items))
	counts := make(map[string]int, len(plan.services))
	for i, r := range plan.rows {
		if pending[i] {
			continue
		}
		rows = append(rows, r)
		if plan.items[r.item].Key != "" {
			keyed = append(keyed, r)
		}
		takers[r.item]++
		counts[r.service]++
	}
	kept := make([]int, 0, len(plan.items))
	for i, n := range takers {
		if n > 0 {
			kept = append(kept, i)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	now := s.now().UnixNano()
	args := make([]any, 0, 4*min(maxBatch, max(len(kept), len(plan.rows))))

	// Items. seq is INTEGER PRIMARY KEY AUTOINCREMENT, so the rows of one
	// INSERT get consecutive seqs ending at the last insert rowid.
	seqs := make([]int64, len(plan.items))
	err = eachBatch(len(kept), func(k, from, to int) error {
		batch := kept[from:to]
		args = args[:0]
		for _, i := range batch {
			e := plan.items[i]
			args = append(args, int64(e.Kind), e.Key, e.Data, now)
		}
		res, err := tx.StmtContext(ctx, s.st.insertItems[k]).ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("inserting items: %w", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("inserting items: %w", err)
		}
		for j, i := range batch {
			seqs[i] = last - int64(len(batch)-1-j)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Queue rows. The keys of the keyed ones join the recent keys, or,
	// once there would be too many of those, go to the pending table
	// with them.
	err = eachBatch(len(rows), func(k, from, to int) error {
		args = args[:0]
		for _, r := range rows[from:to] {
			args = append(args, r.service, seqs[r.item])
		}
		if _, err := tx.StmtContext(ctx, s.st.insertQueue[k]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("queueing items: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	recent := s.w.recent
	flush := recent.n+len(keyed) > recent.max
	if flush {
		all := recent.pendingRows()
		for _, r := range keyed {
			all = append(all, pendingRow{r.service, r.h, seqs[r.item]})
		}
		if err := s.writePending(ctx, tx, all); err != nil {
			return err
		}
	}

	var emptied []string // services that had nothing queued
	for _, svc := range plan.services {
		n := counts[svc]
		if n == 0 {
			continue
		}
		var queued int
		if err := tx.StmtContext(ctx, s.st.addQueued).QueryRowContext(ctx, svc, n).Scan(&queued); err != nil {
			return fmt.Errorf("counting queued items of %q: %w", svc, err)
		}
		if queued == n {
			emptied = append(emptied, svc)
		}
	}
	if err := s.checkRoom(ctx, tx); err != nil {
		return err
	}

	s.w.keep(func() {
		if flush {
			recent.clear()
		} else {
			for _, r := range keyed {
				c := plan.copies[r.item]
				recent.add(r.service, recentKey{seqs[r.item], c.Kind, c.Key})
			}
		}
		s.followTails(plan, rows, seqs, emptied)
	})
	return nil
}

// alreadyPending reports, for each row of plan, whether its item's kind
// and key are already pending for its service: the pending table names
// candidates by hash, and the queued item itself confirms one (a hash
// collision, or a row whose item has left the queue, is no duplicate).
func (s *Store) alreadyPending(ctx context.Context, tx *sql.Tx, plan *appendPlan) ([]bool, error) {
	pending := make([]bool, len(plan.rows))
	byService := make(map[string][]int, len(plan.services)) // keyed rows to look up in the table
	for i, r := range plan.rows {
		e := plan.items[r.item]
		if e.Key == "" {
			continue
		}
		if seq, ok := s.w.recent.lookup(r.service, e.Kind, e.Key); ok {
			hit, err := s.confirmPending(ctx, tx, r.service, []int64{seq}, e)
			if err != nil {
				return nil, err
			}
			if hit {
				pending[i] = true
				continue
			}
		}
		if s.w.recent.inTable {
			byService[r.service] = append(byService[r.service], i)
		}
	}
	args := make([]any, 0, 1+min(maxBatch, len(plan.rows)))
	for _, svc := range plan.services {
		idx := byService[svc]
		err := eachBatch(len(idx), func(k, from, to int) error {
			batch := idx[from:to]
			args = append(args[:0], svc)
			for _, i := range batch {
				args = append(args, plan.rows[i].h)
			}
			hits, err := s.pendingHits(ctx, tx, k, args)
			if err != nil || len(hits) == 0 {
				return err
			}
			for _, i := range batch {
				r := plan.rows[i]
				if pending[i], err = s.confirmPending(ctx, tx, svc, hits[r.h], plan.items[r.item]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return pending, nil
}

// confirmPending reports whether one of the items queued for service
// under seqs has e's kind and key. A key names candidates only: its hash
// may collide, and its item may have left the queue (a stale row).
func (s *Store) confirmPending(ctx context.Context, tx *sql.Tx, service string, seqs []int64, e *store.Entry) (bool, error) {
	for _, seq := range seqs {
		var kind int64
		var key string
		err := tx.StmtContext(ctx, s.st.pendingItem).QueryRowContext(ctx, service, seq).Scan(&kind, &key)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("checking a pending key: %w", err)
		}
		if store.Kind(kind) == e.Kind && key == e.Key {
			return true, nil
		}
	}
	return false, nil
}

// pendingHits runs findPending[k] with args (the service, then 1<<k
// hashes) and returns the seqs found per hash, nil when none.
func (s *Store) pendingHits(ctx context.Context, tx *sql.Tx, k int, args []any) (map[int64][]int64, error) {
	rows, err := tx.StmtContext(ctx, s.st.findPending[k]).QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("looking up pending keys: %w", err)
	}
	defer rows.Close()
	var hits map[int64][]int64
	for rows.Next() {
		var h, seq int64
		if err := rows.Scan(&h, &seq); err != nil {
			return nil, fmt.Errorf("looking up pending keys: %w", err)
		}
		if hits == nil {
			hits = make(map[int64][]int64)
		}
		hits[h] = append(hits[h], seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("looking up pending keys: %w", err)
	}
	return hits, nil
}

// pruneMin is how many stale pending rows a service may have, at least,
// before Complete removes them while items are still queued; pruneIdle is
// the same when nothing is queued (only stored transactions hold keys
// then, so the removal reads few live rows).
const (
	pruneMin  = 4096
	pruneIdle = 256
)

// pruneSlices is into how many ranges of hashes a removal of stale keys is
// cut, one range per Complete, so that no commit rewrites more than a
// slice of a large index (and holds its pages in memory).
const (
	pruneSliceBits = 4
	pruneSlices    = 1 << pruneSliceBits
)

// prune counts removed queue rows of service, whose pending rows are now
// stale, and removes stale rows in bulk: when nothing is queued and
// pruneIdle are stale, all of them at once; else, once the stale rows
// outnumber both pruneMin and the queued items, those of one range of
// hashes per call until every range has had its turn. Each removal then
// costs a bounded amount per completed item, and rewrites the index in
// order, not at random places.
func (s *Store) prune(ctx context.Context, tx *sql.Tx, service string, removed int64) error {
	var stale, queued int64
	err := tx.StmtContext(ctx, s.st.countStale).QueryRowContext(ctx, removed, service).Scan(&stale, &queued)
	if err != nil {
		return fmt.Errorf("counting stale keys: %w", err)
	}
	const step = uint64(1) << (64 - pruneSliceBits)
	var lo, hi int64
	switch {
	case queued == 0 && stale >= pruneIdle:
		lo, hi = math.MinInt64, math.MaxInt64
		delete(s.w.pruned, service)
	case stale >= max(pruneMin, queued):
		// The writer goroutine runs every call's work, so it owns the
		// cursor. A rolled-back call may skip a range: its stale rows wait
		// for the next turn, and deduplication never trusts a row whose
		// item has left the queue anyway.
		slice := s.w.pruned[service]
		lo = int64(uint64(1)<<63 + uint64(slice)*step) // from math.MinInt64 up
		hi = int64(uint64(lo) + step - 1)
		if slice+1 < pruneSlices {
			s.w.pruned[service] = slice + 1
		} else {
			delete(s.w.pruned, service)
		}
	default:
		return nil
	}
	if _, err := tx.StmtContext(ctx, s.st.prunePending).ExecContext(ctx, service, lo, hi); err != nil {
		return fmt.Errorf("pruning stale keys: %w", err)
	}
	if _, ok := s.w.pruned[service]; ok {
		return nil // more ranges to go
	}
	return s.resetStale(ctx, tx, service)
}

// resetStale records that service has no stale pending rows left.
func (s *Store) resetStale(ctx context.Context, tx *sql.Tx, service string) error {
	if _, err := tx.StmtContext(ctx, s.st.resetStale).ExecContext(ctx, service); err != nil {
		return fmt.Errorf("pruning stale keys: %w", err)
	}
	return nil
}

// Claim implements store.Store. A lease runs from the call for ttl by the
// store's clock. A holder that claims after its lease expired, with no
// other claim in between, gets a new epoch like any new owner.
func (s *Store) Claim(ctx context.Context, service, owner string, ttl time.Duration) (store.Epoch, error) {
	const op = "error claiming lease"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return 0, err
	}
	defer release()
	switch {
	case owner == "":
		return 0, fmt.Errorf("%s on %q: %w", op, service, invalid("empty owner"))
	case ttl <= 0:
		return 0, fmt.Errorf("%s on %q: %w", op, service, invalid("ttl %v is not positive", ttl))
	}
	now := s.now().UnixNano()
	expires := now + ttl.Nanoseconds()
	if expires < now {
		expires = math.MaxInt64
	}
	var granted store.Epoch
	err = s.write(ctx, false, func(ctx context.Context, tx *sql.Tx) error {
		granted = 0
		if _, err := tx.StmtContext(ctx, s.st.ensureService).ExecContext(ctx, service); err != nil {
			return err
		}
		var curOwner string
		var curEpoch, curExpires, maxEpoch int64
		if err := tx.StmtContext(ctx, s.st.lease).QueryRowContext(ctx, service).
			Scan(&curOwner, &curEpoch, &curExpires, &maxEpoch); err != nil {
			return err
		}
		if curEpoch != 0 && now < curExpires {
			if curOwner != owner {
				return fmt.Errorf("service %q is leased to %q until %s: %w",
					service, curOwner, time.Unix(0, curExpires).UTC().Format(time.RFC3339Nano), store.ErrLeaseHeld)
			}
			if _, err := tx.StmtContext(ctx, s.st.extend).ExecContext(ctx, expires, service); err != nil {
				return err
			}
			granted = store.Epoch(curEpoch)
			return nil
		}
		if maxEpoch == math.MaxInt64 {
			return fmt.Errorf("service %q: lease epochs exhausted", service)
		}
		next := maxEpoch + 1
		if _, err := tx.StmtContext(ctx, s.st.grant).ExecContext(ctx, owner, next, expires, next, service); err != nil {
			return err
		}
		granted = store.Epoch(next)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return granted, nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "error releasing lease"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return err
	}
	defer release()
	err = s.write(ctx, false, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		_, err := tx.StmtContext(ctx, s.st.release).ExecContext(ctx, service)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s on %q: %w", op, service, err)
	}
	return nil
}

// NextTxn implements store.Store. It takes the oldest queued items from the
// writer's copy of the service's queue when it has one (see tails), else
// reads them in one query, and binds them by moving the service's bound
// mark past them, so forming a transaction writes one txns row and one
// services row whatever its size.
func (s *Store) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	const op = "error forming transaction"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("%s for %q: %w", op, service, err)
	}
	var txn *store.Txn
	err = s.write(ctx, false, func(ctx context.Context, tx *sql.Tx) error {
		txn = nil
		var curEpoch, lastID, bound, queued int64
		err := tx.StmtContext(ctx, s.st.serviceForTxn).QueryRowContext(ctx, service).
			Scan(&curEpoch, &lastID, &bound, &queued)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if curEpoch == 0 || store.Epoch(curEpoch) != epoch {
			return staleEpoch(epoch)
		}
		tails := s.w.tails
		if queued <= 0 {
			if _, known := tails.m[service]; !known {
				s.w.keep(func() { tails.start(service) })
			}
			return nil
		}
		items, ok := tails.peek(service, queued, lim)
		if ok {
			s.w.keep(func() { tails.consume(service, len(items)) })
		} else {
			items, err = s.readQueued(ctx, tx, service, bound, lim)
			if err != nil || len(items) == 0 {
				return err
			}
			if int64(len(items)) == queued {
				s.w.keep(func() { tails.start(service) }) // all bound: nothing queued
			}
		}
		id := lastID + 1
		if lastID == 0 {
			// The first ID of a service: the clock, so that a new file
			// does not repeat the IDs of one deleted before it.
			id = max(s.now().UnixMicro(), 1)
		}
		created := s.now().UnixNano()
		hash := store.HashItems(items)
		firstSeq, lastSeq := items[0].Seq, items[len(items)-1].Seq
		if _, err := tx.StmtContext(ctx, s.st.insertTxn).
			ExecContext(ctx, service, id, format, hash, created, firstSeq, lastSeq); err != nil {
			return fmt.Errorf("storing transaction: %w", err)
		}
		if _, err := tx.StmtContext(ctx, s.st.bind).
			ExecContext(ctx, id, lastSeq, len(items), service); err != nil {
			return fmt.Errorf("binding items: %w", err)
		}
		txn = &store.Txn{
			Service: service,
			ID:      id,
			Format:  format,
			Hash:    hash,
			Items:   items,
			Created: time.Unix(0, created),
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s for %q: %w", op, service, err)
	}
	return txn, nil
}

// readQueued reads the oldest queued items of service (seq above bound)
// in seq order and stops at the first that does not fit lim: its kind's
// count is reached, or its bytes would pass MaxBytes (the first always
// fits). Rows are streamed, so stopping early reads no further.
func (s *Store) readQueued(ctx context.Context, tx *sql.Tx, service string, bound int64, lim store.Limits) ([]store.Item, error) {
	// Every kind has its own count, so the most rows that can fit is the
	// sum of the limits of the kinds seen; -1 lets the scan decide.
	rows, err := tx.StmtContext(ctx, s.st.queuedItems).QueryContext(ctx, service, bound, -1)
	if err != nil {
		return nil, fmt.Errorf("reading queued items: %w", err)
	}
	defer rows.Close()
	items := make([]store.Item, 0, min(lim.MaxItems, 128))
	f := lim.NewFit()
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("reading queued items: %w", err)
		}
		if !f.Take(it.Kind, len(it.Data)) {
			break
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading queued items: %w", err)
	}
	return items, nil
}

// scanItem scans a row of seq, kind, key, data.
func scanItem(rows *sql.Rows) (store.Item, error) {
	var it store.Item
	var kind int64
	err := rows.Scan(&it.Seq, &kind, &it.Key, &it.Data)
	it.Kind = store.Kind(kind)
	return it, err
}

// Txns implements store.Store. It reads the transactions and then all their
// items in one range query: transactions bind consecutive ranges of the
// service's queue in ID order.
func (s *Store) Txns(ctx context.Context, service string, limit int) ([]store.Txn, error) {
	const op = "error listing transactions"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return nil, err
	}
	defer release()
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var txns []store.Txn
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		var ranges [][2]int64
		rows, err := tx.StmtContext(ctx, s.st.listTxns).QueryContext(ctx, service, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			t := store.Txn{Service: service}
			var created, first, last int64
			if err := rows.Scan(&t.ID, &t.Format, &t.Hash, &created, &first, &last); err != nil {
				return err
			}
			t.Created = time.Unix(0, created)
			txns = append(txns, t)
			ranges = append(ranges, [2]int64{first, last})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if len(txns) == 0 {
			return nil
		}

		items, err := tx.StmtContext(ctx, s.st.rangeItems).
			QueryContext(ctx, service, ranges[0][0], ranges[len(ranges)-1][1])
		if err != nil {
			return err
		}
		defer items.Close()
		j := 0
		for items.Next() {
			it, err := scanItem(items)
			if err != nil {
				return err
			}
			for j < len(ranges) && it.Seq > ranges[j][1] {
				j++
			}
			if j == len(ranges) {
				break
			}
			if it.Seq >= ranges[j][0] {
				txns[j].Items = append(txns[j].Items, it)
			}
		}
		return items.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("%s of %q: %w", op, service, err)
	}
	return txns, nil
}

// Complete implements store.Store. The pages it frees are given back to the
// file system later, by the writer between batches; see the package doc.
func (s *Store) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	const op = "error completing transaction"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return err
	}
	defer release()
	err = s.write(ctx, true, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		if err := s.loadRecent(ctx, tx); err != nil {
			return err
		}
		var first, last int64
		err := tx.StmtContext(ctx, s.st.txnRange).QueryRowContext(ctx, service, id).Scan(&first, &last)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // unknown or already completed
		}
		if err != nil {
			return err
		}
		// Items first, while the queue rows still say which are ours.
		if _, err := tx.StmtContext(ctx, s.st.deleteTxnItems).ExecContext(ctx, service, first, last, service); err != nil {
			return fmt.Errorf("deleting items: %w", err)
		}
		res, err := tx.StmtContext(ctx, s.st.deleteTxnQueue).ExecContext(ctx, service, first, last)
		if err != nil {
			return fmt.Errorf("deleting queue rows: %w", err)
		}
		if _, err := tx.StmtContext(ctx, s.st.deleteTxn).ExecContext(ctx, service, id); err != nil {
			return err
		}
		removed, err := res.RowsAffected()
		if err != nil {
			return err
		}
		// Recent keys of the removed rows were never in the table: they
		// leave no stale row there.
		recent := s.w.recent
		if err := s.prune(ctx, tx, service, removed-int64(recent.count(service, first, last))); err != nil {
			return err
		}
		s.w.keep(func() { recent.remove(service, first, last) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s %d of %q: %w", op, id, service, err)
	}
	return nil
}

// Backlogs implements store.Store.
func (s *Store) Backlogs(ctx context.Context) ([]store.Backlog, error) {
	const op = "error listing backlogs"
	release, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer release()
	rows, err := s.st.backlogs.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	var out []store.Backlog
	for rows.Next() {
		var b store.Backlog
		var oldest int64
		if err := rows.Scan(&b.Service, &b.Txns, &b.Queued, &oldest); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		b.Oldest = time.Unix(0, oldest)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Purge implements store.Store. The service's lease and last transaction ID
// are kept. The space the purge frees is given back to the file system
// later, by the writer in bounded steps between batches.
func (s *Store) Purge(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "error purging service"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return err
	}
	defer release()
	err = s.writeAlone(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.st.purgeItems).ExecContext(ctx, service, service); err != nil {
			return fmt.Errorf("deleting items: %w", err)
		}
		for _, st := range []*sql.Stmt{s.st.purgeQueue, s.st.dropPending, s.st.purgeTxns, s.st.purgeService} {
			if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, service); err != nil {
				return err
			}
		}
		s.w.keep(func() { // its queue and keys are gone
			delete(s.w.pruned, service)
			s.w.tails.drop(service)
			s.w.recent.drop(service)
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, service, err)
	}
	return nil
}
