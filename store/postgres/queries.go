package postgres

// queries holds the store's SQL with the schema name filled in. Each
// statement's comment says what it relies on; the package doc says why.
type queries struct {
	ensureServices, ensureHeads string
	lockHeads, appendItems      string
	claim, release              string
	lockLease, formLease        string
	shareLease                  string
	page, formTxn               string
	lockTxnShared, complete     string
	lockAllShared, purge        string
	txns, backlogs              string
	pendingServices             string
	serviceUp                   string
	serviceUpNotify             string
	heads                       string
	outboxInsert, outboxTake    string
	outboxAny                   string
}

// leaseHeld is the guard that makes a statement a no-op unless $2 is the
// current lease epoch of service $1. Statements that use it run after the
// lease row was locked in the same transaction, so it sees the same epoch
// as the lock did.
const leaseHeld = `EXISTS (SELECT 1 FROM {s}.services WHERE service = $1 AND lease_epoch = $2 AND lease_epoch <> 0)`

// notShared is the condition under which an item whose queue row of
// service $1 has been deleted may be deleted too: it was queued for one
// service only, or no other of its services still has a row for it. The
// statement that uses it runs after the shared items were locked, so it
// sees the deletes of a concurrent Complete or Purge of another service
// that locked them first.
const notShared = `(it.services IS NULL OR NOT EXISTS (
	SELECT 1 FROM {s}.queue o WHERE o.service = ANY (it.services) AND o.service <> $1 AND o.seq = it.seq))`

func newQueries(schema string) queries {
	x := func(sql string) string { return expand(schema, sql) }
	return queries{
		// Rows are created in sorted order, services before heads, so two
		// calls that create the same new services never deadlock.
		ensureServices: x(`INSERT INTO {s}.services (service)
SELECT service FROM unnest($1::text[]) AS n(service) ORDER BY service COLLATE "C"
ON CONFLICT DO NOTHING`),
		ensureHeads: x(`INSERT INTO {s}.heads (service)
SELECT service FROM unnest($1::text[]) AS n(service) ORDER BY service COLLATE "C"
ON CONFLICT DO NOTHING`),

		// The locks that order Appends, taken in sorted order (LockRows
		// runs above the sort) and held until commit.
		lockHeads: x(`SELECT 1 FROM {s}.heads WHERE service = ANY ($1::text[])
ORDER BY service COLLATE "C" FOR NO KEY UPDATE`),

		// appendItems writes an Append, whose services' heads rows the
		// transaction has locked, in one statement: entries ($1 kinds, $2
		// keys, $3 data, $4 append times, NULL for now()) and the pairs
		// of an entry number (1-based, $5) and a service ($6) that want
		// them. A pair whose kind and key are pending for its service
		// already is dropped (one lookup per pair: the items of the key
		// through the key index, then, in a subquery of its own, their
		// queue row of the service by primary key; written so that no
		// other path is left to a plan made for tables it thought empty),
		// then the entries left without pairs. The others draw
		// Seqs in entry order (nextval's order is not the rows', so the
		// values drawn are sorted) and get their items, queue rows and
		// heads counts; a service's items are listed with the item when
		// there are several. One notification ($8, $9) goes out when
		// anything was queued. With $7, when the outbox holds rows, it
		// writes nothing and reports outboxed. It returns outboxed and
		// the services queued to with their new last_seq.
		appendItems: x(`WITH ob AS (
	SELECT $7::boolean AND EXISTS (SELECT 1 FROM {s}.outbox) AS outboxed
),
e AS (
	SELECT u.n, u.kind, u.key, u.data, u.created
	FROM unnest($1::smallint[], $2::bytea[], $3::bytea[], $4::timestamptz[]) WITH ORDINALITY AS u(kind, key, data, created, n)
),
kept AS (
	SELECT p.entry, p.service, p.n
	FROM unnest($5::integer[], $6::text[]) WITH ORDINALITY AS p(entry, service, n)
	JOIN e ON e.n = p.entry
	WHERE NOT (SELECT outboxed FROM ob) AND (e.key = '' OR NOT EXISTS (
		SELECT 1 FROM {s}.items it WHERE it.key = e.key AND it.key <> '' AND it.kind = e.kind
			AND (SELECT true FROM {s}.queue q WHERE q.service = p.service AND q.seq = it.seq)))
),
wanted AS (
	SELECT entry, array_agg(service ORDER BY n) AS services, row_number() OVER (ORDER BY entry) AS r
	FROM kept GROUP BY entry
),
seqs AS (
	SELECT seq, row_number() OVER (ORDER BY seq) AS r
	FROM (SELECT nextval('{s}.items_seq') AS seq FROM generate_series(1, (SELECT count(*) FROM wanted))) d
),
placed AS (
	SELECT w.entry, w.services, s.seq FROM wanted w JOIN seqs s ON s.r = w.r
),
new_items AS (
	INSERT INTO {s}.items (seq, kind, key, data, created, services)
	SELECT p.seq, e.kind, e.key, e.data, coalesce(e.created, now()), CASE WHEN cardinality(p.services) > 1 THEN p.services END
	FROM placed p JOIN e ON e.n = p.entry
),
new_queue AS (
	INSERT INTO {s}.queue (service, seq) SELECT k.service, p.seq FROM kept k JOIN placed p ON p.entry = k.entry
),
heads AS (
	UPDATE {s}.heads h SET appended = h.appended + c.n, last_seq = greatest(h.last_seq, c.last)
	FROM (SELECT k.service, count(*) AS n, max(p.seq) AS last FROM kept k JOIN placed p ON p.entry = k.entry GROUP BY k.service) c
	WHERE h.service = c.service
	RETURNING h.service, h.last_seq
),
notified AS (
	SELECT pg_notify($8, $9) FROM (SELECT 1 FROM heads LIMIT 1) x
)
SELECT (SELECT outboxed FROM ob), h.services, h.last_seqs, (SELECT count(*) FROM notified)
FROM (SELECT array_agg(service ORDER BY service) AS services, array_agg(last_seq ORDER BY service) AS last_seqs FROM heads) h`),

		// claim grants the lease to owner $2 for $3 microseconds, on the
		// database's clock, if it is free, expired or already $2's: the
		// holder keeps its epoch, anyone else gets max_epoch + 1. The
		// UPDATE locks the row, so concurrent claims queue, and each
		// re-checks the condition on the row the one before left.
		claim: x(`UPDATE {s}.services SET
	lease_epoch = CASE WHEN lease_epoch <> 0 AND lease_owner = $2 AND lease_expires > clock_timestamp()
		THEN lease_epoch ELSE max_epoch + 1 END,
	max_epoch = CASE WHEN lease_epoch <> 0 AND lease_owner = $2 AND lease_expires > clock_timestamp()
		THEN max_epoch ELSE max_epoch + 1 END,
	lease_owner = $2,
	lease_expires = clock_timestamp() + $3::bigint * interval '1 microsecond'
WHERE service = $1 AND (lease_epoch = 0 OR lease_expires <= clock_timestamp() OR lease_owner = $2)
RETURNING lease_epoch`),
		release: x(`WITH r AS (UPDATE {s}.services SET lease_owner = '', lease_epoch = 0, lease_expires = NULL
WHERE service = $1 AND lease_epoch = $2 AND lease_epoch <> 0 RETURNING service)
SELECT count(*) FROM (SELECT pg_notify($3, $4) FROM r) n`),

		// The lock modes of the lease row let the owner's Complete (FOR
		// KEY SHARE) run beside its next NextTxn (FOR NO KEY UPDATE, as
		// it updates the row), while a Claim and a Purge (lockLease, FOR
		// UPDATE) conflict with both: a grant to another owner waits
		// for the owner's calls under way, and they see it once it has
		// committed.
		lockLease:  x(`SELECT lease_epoch FROM {s}.services WHERE service = $1 FOR UPDATE`),
		formLease:  x(`SELECT lease_epoch FROM {s}.services WHERE service = $1 FOR NO KEY UPDATE`),
		shareLease: x(`SELECT lease_epoch FROM {s}.services WHERE service = $1 FOR KEY SHARE`),

		// page reads queued items of service $1 in Seq order, after $3 or,
		// when $3 is NULL, after the bound ones of the epoch $2.
		// It returns them in no order: sorting them in the statement
		// would make an ordered walk of the whole items index look as
		// good as looking them up, to a plan made while items was empty.
		page: x(`SELECT seq, kind, key, data FROM {s}.items WHERE seq = ANY (ARRAY(
	SELECT seq FROM {s}.queue
	WHERE service = $1 AND seq > coalesce($3::bigint,
		(SELECT bound_seq FROM {s}.services WHERE service = $1 AND lease_epoch = $2 AND lease_epoch <> 0))
	ORDER BY seq LIMIT $4))`),
		// formTxn stores the transaction of items ($4, $5] (first and last
		// seq) and binds them. Its ID is above the last one and at least
		// the clock in microseconds.
		formTxn: x(`WITH t AS (
	INSERT INTO {s}.txns (service, id, format, hash, created, first_seq, last_seq)
	SELECT service, greatest(last_txn_id + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint),
	       $2, $3, clock_timestamp(), $4, $5
	FROM {s}.services WHERE service = $1
	RETURNING id, created
)
UPDATE {s}.services s SET last_txn_id = t.id, bound_seq = $5, taken = s.taken + $6
FROM t WHERE s.service = $1
RETURNING t.id, t.created`),

		// The statements below reach the queue by ranges of one service's
		// rows and items by lists of seqs, through their indexes whatever
		// the planner estimates (LATERAL, = ANY of an array): a backlog's
		// size never turns them into scans.
		lockTxnShared: x(`SELECT seq FROM {s}.items
WHERE seq = ANY (ARRAY(
	SELECT seq FROM {s}.queue WHERE service = $1
	AND seq BETWEEN (SELECT first_seq FROM {s}.txns WHERE service = $1 AND id = $3)
		AND (SELECT last_seq FROM {s}.txns WHERE service = $1 AND id = $3)))
AND services IS NOT NULL AND ` + leaseHeld + `
ORDER BY seq FOR UPDATE`),
		complete: x(`WITH t AS (
	DELETE FROM {s}.txns WHERE service = $1 AND id = $3 AND ` + leaseHeld + `
	RETURNING first_seq, last_seq
),
q AS (
	DELETE FROM {s}.queue
	WHERE service = $1 AND seq BETWEEN (SELECT first_seq FROM t) AND (SELECT last_seq FROM t)
	RETURNING seq
)
DELETE FROM {s}.items it WHERE it.seq = ANY (ARRAY(SELECT seq FROM q)) AND ` + notShared),

		lockAllShared: x(`SELECT seq FROM {s}.items
WHERE seq = ANY (ARRAY(SELECT seq FROM {s}.queue WHERE service = $1))
AND services IS NOT NULL AND ` + leaseHeld + `
ORDER BY seq FOR UPDATE`),
		purge: x(`WITH g AS (
	SELECT bound_seq FROM {s}.services WHERE service = $1 AND lease_epoch = $2 AND lease_epoch <> 0
),
t AS (
	DELETE FROM {s}.txns WHERE service = $1 AND EXISTS (SELECT 1 FROM g)
),
q AS (
	DELETE FROM {s}.queue WHERE service = $1 AND EXISTS (SELECT 1 FROM g) RETURNING seq
),
d AS (
	DELETE FROM {s}.items it WHERE it.seq = ANY (ARRAY(SELECT seq FROM q)) AND ` + notShared + `
)
UPDATE {s}.services s SET taken = s.taken + (SELECT count(*) FROM q, g WHERE q.seq > g.bound_seq)
WHERE s.service = $1 AND EXISTS (SELECT 1 FROM g)`),

		// One statement, so one snapshot: no Complete can slip between
		// listing a transaction and reading its items. The oldest
		// transactions are consecutive runs of the service's queue, so
		// the queue rows from the first's first_seq to the last's
		// last_seq are theirs.
		txns: x(`WITH t AS (SELECT * FROM {s}.txns WHERE service = $1 ORDER BY id LIMIT $2)
SELECT t.id, t.format, t.hash, t.created, it.seq, it.kind, it.key, it.data
FROM {s}.items it JOIN t ON it.seq BETWEEN t.first_seq AND t.last_seq
WHERE it.seq = ANY (ARRAY(
	SELECT seq FROM {s}.queue WHERE service = $1
	AND seq BETWEEN (SELECT min(first_seq) FROM t) AND (SELECT max(last_seq) FROM t)))
ORDER BY t.id, it.seq`),
		backlogs: x(`SELECT s.service, coalesce(t.n, 0), h.appended - s.taken,
	(SELECT created FROM {s}.items WHERE seq = (SELECT min(seq) FROM {s}.queue WHERE service = s.service))
FROM {s}.services s
JOIN {s}.heads h ON h.service = s.service
LEFT JOIN (SELECT service, count(*) AS n FROM {s}.txns GROUP BY service) t ON t.service = s.service
WHERE t.n > 0 OR h.appended > s.taken`),
		pendingServices: x(`SELECT s.service FROM {s}.services s JOIN {s}.heads h ON h.service = s.service
WHERE h.appended > s.taken`),

		// serviceUp counts the call for polling stores, serviceUpNotify
		// tells the listening ones. Nothing depends on the signal
		// surviving a crash, so their commit does not wait for the disk.
		serviceUp:       x(`UPDATE {s}.heads SET up_gen = up_gen + 1 WHERE service = $1 RETURNING up_gen`),
		serviceUpNotify: `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`,
		heads:           x(`SELECT service, last_seq, up_gen FROM {s}.heads`),

		// outboxInsert inserts the entries of one AppendTx call, with one
		// call number from outbox_call and their positions in the call,
		// and notifies every store when the caller's transaction commits.
		outboxInsert: x(`WITH c AS (SELECT nextval('{s}.outbox_call') AS call),
ins AS (
	INSERT INTO {s}.outbox (call, pos, kind, key, data, services)
	SELECT c.call, v.pos::integer, v.kind, v.key, v.data, v.services
	FROM c, unnest($3::smallint[], $4::bytea[], $5::bytea[], $6::text[])
		WITH ORDINALITY AS v(kind, key, data, services, pos)
	RETURNING 1
)
SELECT pg_notify($1, $2) WHERE EXISTS (SELECT 1 FROM ins)`),
		outboxAny: x(`SELECT EXISTS (SELECT 1 FROM {s}.outbox)`),
		// outboxTake takes the oldest outbox rows. The forwarder holds the
		// schema's advisory lock, so forwarders take rows one after the
		// other, in order; rows of transactions still open are invisible
		// and wait for a later round, not skipped.
		outboxTake: x(`DELETE FROM {s}.outbox WHERE (call, pos) IN (
	SELECT call, pos FROM {s}.outbox ORDER BY call, pos LIMIT $1 FOR UPDATE)
RETURNING call, pos, kind, key, data, services, created`),
	}
}
