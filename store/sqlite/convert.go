package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/asdeliver/scheduler/store"
)

// fromItems converts a file of schema version 1, 2 or 3, which kept a row
// per item, into batches: runs of consecutive seqs appended at the same time (by one
// call), up to migrateBatchItems items or migrateBatchBytes bytes of data
// each, keeping every seq, so that the stored transactions' ranges and the
// services' bound marks stay valid.
const (
	migrateBatchItems = 512
	migrateBatchBytes = 1 << 20
)

// fromItems is the conversion; see above. The items and queue tables of
// versions 1 to 3 differ only in columns it does not read.
func fromItems(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, schemaBatches+`
CREATE TABLE queue_v4 (
	service TEXT    NOT NULL,
	last    INTEGER NOT NULL,
	batch   INTEGER NOT NULL,
	picks   BLOB,
	PRIMARY KEY (service, last)
) WITHOUT ROWID;`); err != nil {
		return err
	}
	// The seqs already used: a new item must get a higher one, even when
	// the items that had them are gone.
	var used int64
	if err := tx.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0),
		coalesce((SELECT max(bound_seq) FROM services), 0))`).Scan(&used); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT i.seq, i.kind, i.key, i.data, i.created, q.service
		FROM items AS i JOIN queue AS q ON q.seq = i.seq ORDER BY i.seq, q.service`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var b migrateBatch
	for rows.Next() {
		var seq, created int64
		var kind int64
		var key, svc string
		var data []byte
		if err := rows.Scan(&seq, &kind, &key, &data, &created, &svc); err != nil {
			return err
		}
		if seq != b.last || len(b.items) == 0 {
			if len(b.items) > 0 && (seq != b.last+1 || created != b.created || len(b.items) == migrateBatchItems || b.size+len(data) > migrateBatchBytes) {
				if err := b.store(ctx, tx); err != nil {
					return err
				}
				b = migrateBatch{}
			}
			if len(b.items) == 0 {
				b.created = created
			}
			b.items = append(b.items, &store.Entry{Item: store.Item{Kind: store.Kind(kind), Key: key, Data: data}})
			b.last, b.size = seq, b.size+len(data)
		}
		if b.picks == nil {
			b.picks = make(map[string][]int)
		}
		b.picks[svc] = append(b.picks[svc], len(b.items)-1)
		if len(b.picks[svc]) == 1 {
			b.services = append(b.services, svc)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(b.items) > 0 {
		if err := b.store(ctx, tx); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `
DELETE FROM sqlite_sequence WHERE name IN ('items', 'batches');
INSERT INTO sqlite_sequence (name, seq) VALUES ('batches', ?);
DROP TABLE IF EXISTS pending;
DROP TABLE queue;
DROP TABLE items;
ALTER TABLE queue_v4 RENAME TO queue;
`, used)
	if err != nil {
		return err
	}
	// Versions 2 and 3 counted stale key rows per service.
	var stale int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('services') WHERE name = 'dedup_stale'`).Scan(&stale); err != nil {
		return err
	}
	if stale > 0 {
		_, err = tx.ExecContext(ctx, `ALTER TABLE services DROP COLUMN dedup_stale`)
	}
	return err
}

// migrateBatch is a batch being gathered from the rows of version 3.
type migrateBatch struct {
	items    []*store.Entry
	last     int64 // seq of the last item
	size     int   // bytes of data
	created  int64 // of the first item: the batch's oldest
	services []string
	picks    map[string][]int
}

func (b *migrateBatch) store(ctx context.Context, tx *sql.Tx) error {
	keys, data := encodeBatch(b.items)
	n := len(b.items)
	if _, err := tx.ExecContext(ctx, `INSERT INTO batches (seq, n, refs, created, keys, data) VALUES (?, ?, ?, ?, ?, ?)`,
		b.last, n, len(b.services), b.created, keys, data); err != nil {
		return fmt.Errorf("storing batch %d: %w", b.last, err)
	}
	for _, svc := range b.services {
		idx := b.picks[svc]
		last := b.last - int64(n-1-idx[len(idx)-1])
		if _, err := tx.ExecContext(ctx, `INSERT INTO queue_v4 (service, last, batch, picks) VALUES (?, ?, ?, ?)`,
			svc, last, b.last, encodePicks(idx, n)); err != nil {
			return fmt.Errorf("queueing batch %d: %w", b.last, err)
		}
	}
	return nil
}
