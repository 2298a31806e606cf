package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/asdeliver/scheduler/store"
)

// fromItems converts a file of schema version 1, 2 or 3, which kept a row
// per item, into batches: the items of one earlier call (consecutive seqs,
// one created time) are cut as Append cuts a call, keeping every seq, so
// that stored transactions and bound marks stay valid.
func fromItems(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `ALTER TABLE queue RENAME TO queue_v3;`+schemaBatches); err != nil {
		return err
	}
	// New items get seqs above every one used, even by items now gone.
	var used int64
	if err := tx.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0),
		coalesce((SELECT max(bound_seq) FROM services), 0))`).Scan(&used); err != nil {
		return err
	}
	c := &converter{picks: make(map[string][]int)}
	var err error
	if c.insertBatch, err = tx.PrepareContext(ctx, insertBatchSQL); err != nil {
		return err
	}
	defer c.insertBatch.Close()
	if c.insertQueue, err = tx.PrepareContext(ctx, insertQueueSQL); err != nil {
		return err
	}
	defer c.insertQueue.Close()
	rows, err := tx.QueryContext(ctx, `SELECT i.seq, i.kind, i.key, i.data, i.created, q.service
		FROM items AS i JOIN queue_v3 AS q ON q.seq = i.seq ORDER BY i.seq, q.service`)
	if err != nil {
		return err
	}
	err = scanRows(rows, func() error {
		var seq, created, kind int64
		var key, svc string
		var data []byte
		if err := rows.Scan(&seq, &kind, &key, &data, &created, &svc); err != nil {
			return err
		}
		return c.take(ctx, seq, created, store.Item{Kind: store.Kind(kind), Key: key, Data: data}, svc)
	})
	if err != nil {
		return err
	}
	if err := c.flush(ctx); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `
DELETE FROM sqlite_sequence WHERE name IN ('items', 'batches');
INSERT INTO sqlite_sequence (name, seq) VALUES ('batches', ?);
DROP TABLE IF EXISTS pending;
DROP TABLE queue_v3;
DROP TABLE items;
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

// converter gathers the items of one earlier call, in seq order, and
// stores them as Append would have (writeBatch).
type converter struct {
	insertBatch, insertQueue *sql.Stmt

	items    []*store.Entry
	first    int64 // seq of the first item
	created  int64 // when the call was made
	services []string
	picks    map[string][]int // per service, indexes into items
}

// take adds the row of the item at seq, appended at created, queued for
// svc; the rows come in order of seq. An item that does not follow the
// last one, or comes from another call, first stores those gathered.
func (c *converter) take(ctx context.Context, seq, created int64, it store.Item, svc string) error {
	next := c.first + int64(len(c.items))
	if len(c.items) > 0 && seq != next-1 && (seq != next || created != c.created) {
		if err := c.flush(ctx); err != nil {
			return err
		}
	}
	if len(c.items) == 0 {
		c.first, c.created = seq, created
	}
	if seq != c.first+int64(len(c.items))-1 {
		c.items = append(c.items, &store.Entry{Item: it})
	}
	idx := len(c.items) - 1
	if len(c.picks[svc]) == 0 {
		c.services = append(c.services, svc)
	}
	c.picks[svc] = append(c.picks[svc], idx)
	return nil
}

// flush stores the items gathered, cut into batches.
func (c *converter) flush(ctx context.Context) error {
	for _, b := range encodeBatches(c.items) {
		if err := writeBatch(ctx, c.insertBatch, c.insertQueue, c.first, b, c.services, c.picks, c.created); err != nil {
			return fmt.Errorf("converting the items from seq %d: %w", c.first, err)
		}
	}
	c.items, c.services = c.items[:0], c.services[:0]
	clear(c.picks)
	return nil
}
