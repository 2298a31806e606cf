package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/asdeliver/scheduler/store"
)

// checkEntries returns an error matching store.ErrInvalid for the first
// entry that Append must refuse.
func checkEntries(op string, entries []store.Entry) error {
	for i, e := range entries {
		if len(e.Services) == 0 {
			return invalid(op, "entry %d has no services: list at least one", i)
		}
		for _, svc := range e.Services {
			if err := checkName(op, fmt.Sprintf("service ID in entry %d", i), svc); err != nil {
				return err
			}
		}
		if len(e.Data) == 0 {
			return invalid(op, "entry %d has no data", i)
		}
	}
	return nil
}

// pendingKey is what Append deduplicates on.
type pendingKey struct {
	service string
	kind    store.Kind
	key     string
}

// appendSet is the entries of one call, checked and deduplicated within
// the call: the entries still wanted, and one pair per entry and service
// that wants it, in the entries' order.
type appendSet struct {
	entries  []store.Entry
	created  []time.Time // one per entry, or nil: now()
	pairs    []pair
	services []string // the distinct services, sorted
}

// pair is one entry queued for one service.
type pair struct {
	entry   int // index in appendSet.entries
	service string
}

// newAppendSet drops, from checked entries, a service listed twice in one
// entry and a (service, kind, key) that an earlier entry of the call
// already queues, and then the entries that no service wants any more.
// created, if not nil, holds each entry's append time.
func newAppendSet(entries []store.Entry, created []time.Time) *appendSet {
	set := &appendSet{}
	seen := make(map[pendingKey]struct{})
	distinct := make(map[string]struct{})
	for i, e := range entries {
		kept := false
		for j, svc := range e.Services {
			if slices.Contains(e.Services[:j], svc) {
				continue
			}
			if e.Key != "" {
				k := pendingKey{svc, e.Kind, e.Key}
				if _, dup := seen[k]; dup {
					continue
				}
				seen[k] = struct{}{}
			}
			if !kept {
				kept = true
				set.entries = append(set.entries, e)
				if created != nil {
					set.created = append(set.created, created[i])
				}
			}
			set.pairs = append(set.pairs, pair{len(set.entries) - 1, svc})
			distinct[svc] = struct{}{}
		}
	}
	for svc := range distinct {
		set.services = append(set.services, svc)
	}
	slices.Sort(set.services)
	return set
}

// appendResult is what an Append's statements report.
type appendResult struct {
	outboxed bool     // the outbox held rows: nothing was written
	services []string // the services that got queue rows
	lastSeqs []int64  // their heads' last_seq after the Append
}

// queueAppend queues on b, for set, the statements of an Append, which
// must run in one transaction: lock the heads rows of its services (in
// sorted order: LockRows runs above the sort), then write everything in
// one statement (appendItems). The heads rows must exist (ensure). With
// checkOutbox, nothing is written if the outbox holds rows.
func (s *Store) queueAppend(b *pgx.Batch, set *appendSet, checkOutbox bool) *appendResult {
	r := &appendResult{}
	b.Queue(s.sql.lockHeads, set.services)
	kinds := make([]int16, len(set.entries))
	keys := make([][]byte, len(set.entries))
	datas := make([][]byte, len(set.entries))
	for i, e := range set.entries {
		kinds[i], keys[i], datas[i] = int16(e.Kind), []byte(e.Key), e.Data
	}
	created := set.created
	if created == nil {
		created = []time.Time{} // unnest pads it with NULL: now()
	}
	entries := make([]int32, len(set.pairs))
	services := make([]string, len(set.pairs))
	for n, p := range set.pairs {
		entries[n], services[n] = int32(p.entry+1), p.service
	}
	b.Queue(s.sql.appendItems, kinds, keys, datas, created, entries, services,
		checkOutbox, s.channel, s.workNotice(set.services)).QueryRow(func(row pgx.Row) error {
		var notified int64
		return row.Scan(&r.outboxed, &r.services, &r.lastSeqs, &notified)
	})
	return r
}

// record tells w of the Store's own Append, once it has committed.
func (r *appendResult) record(w *watchers) {
	for i, svc := range r.services {
		w.appended(svc, r.lastSeqs[i]) // both from one array_agg over heads
	}
}

// missing returns the services of which this Store has not seen rows in
// the services and heads tables yet. The rows are never deleted, so a
// service needs creating once per Store.
func (s *Store) missing(services []string) []string {
	var out []string
	for _, svc := range services {
		if _, ok := s.known.Load(svc); !ok {
			out = append(out, svc)
		}
	}
	return out
}

// queueEnsure queues on b the statements that create the rows of services
// that do not exist yet. Once they have committed, markKnown records them.
func (s *Store) queueEnsure(b *pgx.Batch, services []string) {
	b.Queue(s.sql.ensureServices, services)
	b.Queue(s.sql.ensureHeads, services)
}

// markKnown records that the rows of services exist.
func (s *Store) markKnown(services []string) {
	for _, svc := range services {
		s.known.Store(svc, struct{}{})
	}
}

// ensure creates the rows of services that this Store has not seen yet,
// in a transaction of their own, so that later calls need not lock
// anything to create them.
func (s *Store) ensure(ctx context.Context, services []string) error {
	missing := s.missing(services)
	if len(missing) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	s.queueEnsure(b, missing)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("creating the rows of services: %w", err)
	}
	s.markKnown(missing)
	return nil
}

// Append stores the entries, as store.Store documents, in one database
// transaction. It checks every entry before it changes anything, so an
// invalid entry stores nothing. The Seq field of the entries is ignored;
// a service listed twice in one entry is queued once. Service IDs must be
// UTF-8 without NUL bytes (PostgreSQL text); keys and data may hold any
// bytes.
//
// Append locks the heads rows of the entries' services until it commits
// (see the package doc), so Appends that share a service commit one after
// the other. It notifies the other Stores of the schema in the same
// commit. Outbox rows (AppendTx) that committed before Append was called
// are forwarded first, so they come before its entries in every queue.
func (s *Store) Append(ctx context.Context, entries []store.Entry) error {
	const op = "appending entries"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	if err := checkEntries(op, entries); err != nil {
		return err
	}
	set := newAppendSet(entries, nil)
	if len(set.entries) == 0 {
		return nil
	}
	if err := s.ensure(ctx, set.services); err != nil {
		return s.fail(op, err)
	}
	forwarded := false
	for {
		outboxed, err := s.appendOnce(ctx, set, !forwarded)
		if err != nil {
			return s.fail(op, err)
		}
		if !outboxed {
			return nil
		}
		// Committed outbox rows wait: forward them, then append after
		// them. Rows that commit later are concurrent with this call and
		// may come after it.
		if err := s.forwardAll(ctx); err != nil {
			return s.fail(op, fmt.Errorf("forwarding the outbox first: %w", err))
		}
		forwarded = true
	}
}

// AppendsInFlight implements store.AppendConcurrency: 2. Appends that
// share a service hold its heads row locked until they commit, so more of
// them under way at once only queue for the lock, each holding a
// connection, where the calls they carry could have been merged into one
// larger Append; two let one be sent while the other commits.
func (s *Store) AppendsInFlight() int { return 2 }

// appendOnce runs Append's transaction for set in one round trip: the
// batch is one implicit transaction, committed at its end. With
// checkOutbox, it writes nothing and reports outboxed when committed
// outbox rows wait.
func (s *Store) appendOnce(ctx context.Context, set *appendSet, checkOutbox bool) (outboxed bool, err error) {
	b := &pgx.Batch{}
	r := s.queueAppend(b, set, checkOutbox)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	r.record(&s.watch)
	return r.outboxed, nil
}

// micros returns d in whole microseconds, rounded up.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// Claim grants owner the lease on service, as store.Store documents, with
// its expiry on the database's clock. A claim by the holder after its
// lease expired counts as a new grant and gets a new epoch, as does a
// claim after Release.
func (s *Store) Claim(ctx context.Context, service, owner string, ttl time.Duration) (store.Epoch, error) {
	const op = "claiming lease"
	if err := s.enter(ctx, op); err != nil {
		return 0, err
	}
	if err := checkName(op, "service ID", service); err != nil {
		return 0, err
	}
	if err := checkName(op, "owner", owner); err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, invalid(op, "ttl %v is not positive", ttl)
	}
	if err := s.ensure(ctx, []string{service}); err != nil {
		return 0, s.fail(op, err)
	}
	// One implicit transaction: the row lock that waits for the owner's
	// calls under way (see lockLease), then the claim.
	var epoch int64
	b := &pgx.Batch{}
	b.Queue(s.sql.lockLease, service)
	b.Queue(s.sql.claim, service, owner, micros(ttl)).QueryRow(func(row pgx.Row) error { return row.Scan(&epoch) })
	err := s.pool.SendBatch(ctx, b).Close()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("postgres: %s: service %q: %w", op, service, store.ErrLeaseHeld)
	case err != nil:
		return 0, s.fail(op, err)
	}
	return store.Epoch(epoch), nil
}

// Release frees the lease on service, as store.Store documents. An epoch
// whose lease expired is still current until another owner claims the
// service, so its holder may release it. The release reaches the watchers
// of the other Stores as SignalWork for the service, so that the process
// that takes over claims it at once.
func (s *Store) Release(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "releasing lease"
	if err := s.enterService(ctx, op, service); err != nil {
		return err
	}
	// The release is announced as work for the service, so that a process
	// waiting for the lease claims it at once rather than at its next poll.
	var released int64
	err := s.pool.QueryRow(ctx, s.sql.release, service, int64(epoch), s.channel, s.workNotice([]string{service})).Scan(&released)
	if err != nil {
		return s.fail(op, err)
	}
	if released == 0 {
		return stale(op, service, epoch)
	}
	return nil
}

// enterService is enter for a method that names a service.
func (s *Store) enterService(ctx context.Context, op, service string) error {
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	return checkName(op, "service ID", service)
}

// maxPage caps the rows NextTxn reads at once.
const maxPage = 1000

// firstPage returns how many queued rows NextTxn reads first under lim:
// one more than lim.MaxItems, the limit of the kinds not listed (usually
// events), so that a transaction of them is formed from one read, at the
// cost of one row too many. A queue of kinds with higher limits is read
// on in pages of maxPage rows.
func firstPage(lim store.Limits) int {
	return min(lim.MaxItems, maxPage-1) + 1
}

// former takes the items of a transaction from pages of the queue, in
// order, until the first that does not fit the limits.
type former struct {
	fit   *store.Fit
	items []store.Item
	full  bool  // an item did not fit: the transaction is complete
	rows  int   // rows read from the last page
	last  int64 // seq of the last item taken
}

// add reads one page of rows (seq, kind, key, data), which come in no
// order, into the transaction.
func (f *former) add(rows pgx.Rows) error {
	var page []store.Item
	for rows.Next() {
		var it store.Item
		var kind int16
		var key []byte
		if err := rows.Scan(&it.Seq, &kind, &key, &it.Data); err != nil {
			return err
		}
		it.Kind, it.Key = store.Kind(kind), string(key)
		page = append(page, it)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	f.rows = len(page)
	slices.SortFunc(page, func(a, b store.Item) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, it := range page {
		if !f.fit.Take(it.Kind, len(it.Data)) {
			f.full = true
			return nil
		}
		f.items = append(f.items, it)
		f.last = it.Seq
	}
	return nil
}

// NextTxn forms the next transaction of service, as store.Store documents,
// in one database transaction that holds the lease row locked (FOR NO KEY
// UPDATE, which a Complete of the same owner does not wait for) from the
// epoch check to the commit. An epoch whose lease expired
// stays current until another owner claims the service.
func (s *Store) NextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	const op = "forming transaction"
	if err := s.enterService(ctx, op, service); err != nil {
		return nil, err
	}
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	txn, err := s.nextTxn(ctx, service, epoch, format, lim)
	switch {
	case errors.Is(err, store.ErrStaleEpoch):
		return nil, stale(op, service, epoch)
	case err != nil:
		return nil, s.fail(op, err)
	}
	return txn, nil
}

func (s *Store) nextTxn(ctx context.Context, service string, epoch store.Epoch, format int, lim store.Limits) (*store.Txn, error) {
	page := firstPage(lim)
	f := &former{fit: lim.NewFit()}
	var current int64

	// Two round trips on one connection: begin, lock the lease row and
	// read the first page; then form the transaction and commit.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release() // the pool drops a connection left in a transaction
	open := false
	defer func() {
		if open {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(s.sql.formLease, service).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&current)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // never claimed: current stays 0
		}
		return err
	})
	b.Queue(s.sql.page, service, int64(epoch), nil, page).Query(f.add)
	open = true
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	if epoch == 0 || int64(epoch) != current {
		return nil, store.ErrStaleEpoch
	}
	for !f.full && f.rows == page {
		page = maxPage
		rows, err := conn.Query(ctx, s.sql.page, service, int64(epoch), f.last, page)
		if err != nil {
			return nil, err
		}
		err = f.add(rows)
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	if len(f.items) == 0 {
		return nil, nil
	}

	t := &store.Txn{
		Service: service,
		Format:  format,
		Hash:    store.HashItems(f.items),
		Items:   f.items,
	}
	first, last := f.items[0].Seq, f.items[len(f.items)-1].Seq
	b = &pgx.Batch{}
	b.Queue(s.sql.formTxn, service, int64(format), t.Hash, first, last, int64(len(f.items))).
		QueryRow(func(row pgx.Row) error { return row.Scan(&t.ID, &t.Created) })
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return fmt.Errorf("the transaction did not commit (%s)", tag)
		}
		return nil
	})
	err = conn.SendBatch(ctx, b).Close()
	open = conn.Conn().PgConn().TxStatus() != 'I'
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Txns lists stored transactions of service, as store.Store documents,
// reading them and their items in one statement.
func (s *Store) Txns(ctx context.Context, service string, limit int) ([]store.Txn, error) {
	const op = "listing transactions"
	if err := s.enterService(ctx, op, service); err != nil {
		return nil, err
	}
	var lim *int64
	if limit > 0 {
		l := int64(limit)
		lim = &l
	}
	rows, err := s.pool.Query(ctx, s.sql.txns, service, lim)
	if err != nil {
		return nil, s.fail(op, err)
	}
	var (
		out     []store.Txn
		id      int64
		format  int64
		hash    []byte
		created time.Time
		it      store.Item
		kind    int16
		key     []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &format, &hash, &created, &it.Seq, &kind, &key, &it.Data}, func() error {
		if len(out) == 0 || out[len(out)-1].ID != id {
			out = append(out, store.Txn{Service: service, ID: id, Format: int(format), Hash: hash, Created: created})
		}
		t := &out[len(out)-1]
		it.Kind, it.Key = store.Kind(kind), string(key)
		t.Items = append(t.Items, it) // Scan gives every row slices of its own
		return nil
	})
	if err != nil {
		return nil, s.fail(op, err)
	}
	return out, nil
}

// Complete deletes a stored transaction, as store.Store documents. It
// holds the lease row locked (FOR KEY SHARE) while it checks the epoch and
// deletes, and locks the transaction's shared items, in Seq order, before
// it decides whether another service still needs them.
func (s *Store) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	const op = "completing transaction"
	if err := s.enterService(ctx, op, service); err != nil {
		return err
	}
	var current int64
	b := &pgx.Batch{}
	b.Queue(s.sql.shareLease, service).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&current)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(s.sql.lockTxnShared, service, int64(epoch), id)
	b.Queue(s.sql.complete, service, int64(epoch), id)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return s.fail(op, err)
	}
	if epoch == 0 || int64(epoch) != current {
		return stale(op, service, epoch)
	}
	return nil
}

// Backlogs reports the services with pending work, as store.Store
// documents, from one statement: the queued count is kept in counters, so
// it costs the same whatever the backlog.
func (s *Store) Backlogs(ctx context.Context) ([]store.Backlog, error) {
	const op = "listing backlogs"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql.backlogs)
	if err != nil {
		return nil, s.fail(op, err)
	}
	var (
		out    []store.Backlog
		b      store.Backlog
		txns   int64
		queued int64
		oldest *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&b.Service, &txns, &queued, &oldest}, func() error {
		b.Txns, b.Queued, b.Oldest = int(txns), int(queued), time.Time{}
		if oldest != nil {
			b.Oldest = *oldest
		}
		out = append(out, b)
		return nil
	})
	if err != nil {
		return nil, s.fail(op, err)
	}
	slices.SortFunc(out, func(a, b store.Backlog) int { return strings.Compare(a.Service, b.Service) })
	return out, nil
}

// Purge deletes everything pending for service, as store.Store documents,
// under the lease row's lock (FOR UPDATE). It keeps the service's lease.
func (s *Store) Purge(ctx context.Context, service string, epoch store.Epoch) error {
	const op = "purging service"
	if err := s.enterService(ctx, op, service); err != nil {
		return err
	}
	var current int64
	b := &pgx.Batch{}
	b.Queue(s.sql.lockLease, service).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&current)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(s.sql.lockAllShared, service, int64(epoch))
	b.Queue(s.sql.purge, service, int64(epoch))
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return s.fail(op, err)
	}
	if epoch == 0 || int64(epoch) != current {
		return stale(op, service, epoch)
	}
	return nil
}
