package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// statements are the prepared statements of the methods, prepared once:
// those of the calls that only read (Txns, Backlogs) on the reader's
// connection, the others on the writer's.
type statements struct {
	all []*sql.Stmt

	insertBatch, insertQueue, addQueued, batchOf   *sql.Stmt // Append
	lease, grant, extend, release, epoch           *sql.Stmt // leases
	serviceForTxn, queueRows, batchByID, insertTxn *sql.Stmt // NextTxn
	bind                                           *sql.Stmt
	listTxns, rangeBatches                         *sql.Stmt // Txns (reader)
	deleteTxn, deleteQueue                         *sql.Stmt // Complete
	purgeQueue, purgeTxns, purgeService            *sql.Stmt // Purge
	backlogs                                       *sql.Stmt // Backlogs (reader)
	// The free pages after a batch that freed some and after a vacuum
	// step; the pages in use before an Append under Options.MaxSize.
	freelistCount, pagesInUse *sql.Stmt
}

// The statements that store a batch (see writeBatch).
const (
	insertBatchSQL = `INSERT INTO batches (seq, n, refs, created, keys, data) VALUES (?, ?, ?, ?, ?, ?)`
	insertQueueSQL = `INSERT INTO queue (service, last, batch, picks) VALUES (?, ?, ?, ?)`
)

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

	st.insertBatch = p(insertBatchSQL)
	st.insertQueue = p(insertQueueSQL)
	st.addQueued = p(`INSERT INTO services (service, queued) VALUES (?, ?)
		ON CONFLICT (service) DO UPDATE SET queued = queued + excluded.queued`)
	st.batchOf = p(`SELECT seq, n, keys FROM batches WHERE seq >= ? ORDER BY seq LIMIT 1`)

	st.lease = p(`SELECT lease_owner, lease_epoch, lease_expires, max_epoch FROM services WHERE service = ?`)
	st.grant = p(`INSERT INTO services (service, lease_owner, lease_epoch, lease_expires, max_epoch) VALUES (?1, ?2, ?3, ?4, ?3)
		ON CONFLICT (service) DO UPDATE SET lease_owner = ?2, lease_epoch = ?3, lease_expires = ?4, max_epoch = ?3`)
	st.extend = p(`UPDATE services SET lease_expires = ? WHERE service = ?`)
	st.release = p(`UPDATE services SET lease_owner = '', lease_epoch = 0, lease_expires = 0 WHERE service = ?`)
	st.epoch = p(`SELECT lease_epoch FROM services WHERE service = ?`)

	st.serviceForTxn = p(`SELECT lease_epoch, last_txn_id, bound_seq, queued FROM services WHERE service = ?`)
	st.queueRows = p(`SELECT last, batch, picks FROM queue WHERE service = ? AND last > ? ORDER BY last LIMIT ?`)
	st.batchByID = p(`SELECT n, keys, data FROM batches WHERE seq = ?`)
	st.insertTxn = p(`INSERT INTO txns (service, id, format, hash, created, first_seq, last_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?)`)
	st.bind = p(`UPDATE services SET last_txn_id = ?, bound_seq = ?, queued = queued - ? WHERE service = ?`)

	st.listTxns = r(`SELECT id, format, hash, created, first_seq, last_seq
		FROM txns WHERE service = ? ORDER BY id LIMIT ?`)
	st.rangeBatches = r(`SELECT q.batch, q.picks, b.n, b.keys, b.data
		FROM queue AS q JOIN batches AS b ON b.seq = q.batch
		WHERE q.service = ? AND q.last BETWEEN ? AND ? ORDER BY q.last`)

	st.deleteTxn = p(`DELETE FROM txns WHERE service = ? AND id = ? RETURNING id`)
	// The rows up to what the service is done with: below its oldest
	// stored transaction, or else all it has bound.
	st.deleteQueue = p(`DELETE FROM queue WHERE service = ?1 AND last <= coalesce(
		(SELECT min(first_seq) - 1 FROM txns WHERE service = ?1), (SELECT bound_seq FROM services WHERE service = ?1))`)
	st.purgeQueue = p(`DELETE FROM queue WHERE service = ?`)
	st.purgeTxns = p(`DELETE FROM txns WHERE service = ?`)
	st.purgeService = p(`UPDATE services SET queued = 0 WHERE service = ?`)

	st.backlogs = r(`SELECT service, txns, queued, oldest FROM (
		SELECT s.service AS service,
			(SELECT count(*) FROM txns AS t WHERE t.service = s.service) AS txns,
			s.queued AS queued,
			(SELECT b.created FROM queue AS q JOIN batches AS b ON b.seq = q.batch
				WHERE q.service = s.service ORDER BY q.last LIMIT 1) AS oldest
		FROM services AS s)
		WHERE oldest IS NOT NULL ORDER BY service`)

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

// scanRows calls scan for each row of rows, until it fails, and closes it.
func scanRows(rows *sql.Rows, scan func() error) error {
	defer rows.Close()
	for rows.Next() {
		if err := scan(); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return rows.Close()
}
