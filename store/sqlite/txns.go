package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// NextTxn implements store.Store. It reads the service's queue rows from
// its bound mark on, with their batches, and binds the items it takes by
// moving the mark past them: forming a transaction writes one txns row and
// one services row whatever its size.
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
	err = s.write(&request{ctx: ctx, work: func(ctx context.Context, tx *sql.Tx) error {
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
		if queued <= 0 {
			return nil
		}
		items, err := s.takeQueued(ctx, tx, service, bound, lim)
		if err != nil || len(items) == 0 {
			return err
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
		s.w.mem.keys.formed(service, id, items, s.keySeed)
		txn = &store.Txn{Service: service, ID: id, Format: format, Hash: hash, Items: items, Created: time.Unix(0, created)}
		return nil
	}}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s for %q: %w", op, service, err)
	}
	return txn, nil
}

// takeQueued returns the oldest queued items of service (seq above bound)
// in seq order, up to the first that does not fit lim. It reads queue rows
// a page at a time, and batches from the writer's memory when it has them.
func (s *Store) takeQueued(ctx context.Context, tx *sql.Tx, service string, bound int64, lim store.Limits) ([]store.Item, error) {
	var items []store.Item
	f := lim.NewFit()
	for after := bound; ; {
		var page []queueRow
		rows, err := tx.StmtContext(ctx, s.st.queueRows).QueryContext(ctx, service, after, queuePage)
		if err == nil {
			err = scanRows(rows, func() error {
				var r queueRow
				err := rows.Scan(&r.last, &r.batch, &r.picks)
				page = append(page, r)
				return err
			})
		}
		if err != nil {
			return nil, fmt.Errorf("reading queued items: %w", err)
		}
		for _, r := range page {
			b, err := s.batch(ctx, tx, r.batch)
			if err != nil {
				return nil, err
			}
			full := false
			err = eachItem(r.batch, b.n, r.picks, b.keys, b.data, func(seq int64, kind store.Kind, key, data []byte) bool {
				if seq <= bound {
					return true
				}
				if full = !f.Take(kind, len(data)); full {
					return false
				}
				if items == nil {
					items = make([]store.Item, 0, min(b.n, lim.MaxItems))
				}
				items = append(items, store.Item{Seq: seq, Kind: kind, Key: string(key), Data: data})
				return true
			})
			if err != nil {
				return nil, fmt.Errorf("reading queued items of batch %d: %w", r.batch, err)
			}
			if full {
				return items, nil
			}
		}
		if len(page) < queuePage {
			return items, nil
		}
		after = page[len(page)-1].last
	}
}

// queuePage is how many queue rows takeQueued reads at a time.
const queuePage = 8

// queueRow is a row of the queue table.
type queueRow struct {
	last, batch int64
	picks       []byte
}

// batch returns the columns of batch seq, from the writer's memory or else
// from the file, and keeps them in memory.
func (s *Store) batch(ctx context.Context, tx *sql.Tx, seq int64) (*cachedBatch, error) {
	if b, ok := s.w.mem.batches.get(seq); ok {
		return b, nil
	}
	b := &cachedBatch{}
	if err := tx.StmtContext(ctx, s.st.batchByID).QueryRowContext(ctx, seq).Scan(&b.n, &b.keys, &b.data); err != nil {
		return nil, fmt.Errorf("reading batch %d: %w", seq, err)
	}
	s.w.mem.batches.readBack(seq, b)
	return b, nil
}

// Txns implements store.Store. It reads the transactions, then the
// service's queue rows from the first one's items on: transactions bind
// consecutive ranges of the service's queue in ID order.
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
		txns = nil
		var ranges [][2]int64
		rows, err := tx.StmtContext(ctx, s.st.listTxns).QueryContext(ctx, service, limit)
		if err == nil {
			err = scanRows(rows, func() error {
				t := store.Txn{Service: service}
				var created, first, last int64
				err := rows.Scan(&t.ID, &t.Format, &t.Hash, &created, &first, &last)
				t.Created = time.Unix(0, created)
				txns = append(txns, t)
				ranges = append(ranges, [2]int64{first, last})
				return err
			})
		}
		if err != nil || len(txns) == 0 {
			return err
		}
		// A queue row holds items of one batch, at most batchMaxItems
		// seqs below its last.
		rows, err = tx.StmtContext(ctx, s.st.rangeBatches).
			QueryContext(ctx, service, ranges[0][0], ranges[len(ranges)-1][1]+batchMaxItems)
		if err != nil {
			return err
		}
		j := 0
		return scanRows(rows, func() error {
			var last int64
			var n int
			var picks, keys, data []byte
			if err := rows.Scan(&last, &picks, &n, &keys, &data); err != nil {
				return err
			}
			err := eachItem(last, n, picks, keys, data, func(seq int64, kind store.Kind, key, data []byte) bool {
				for j < len(ranges) && seq > ranges[j][1] {
					j++
				}
				if j < len(ranges) && seq >= ranges[j][0] {
					txns[j].Items = append(txns[j].Items, store.Item{Seq: seq, Kind: kind, Key: string(key), Data: data})
				}
				return j < len(ranges)
			})
			if err != nil {
				return fmt.Errorf("batch %d: %w", last, err)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%s of %q: %w", op, service, err)
	}
	return txns, nil
}

// Complete implements store.Store. It deletes the transaction, then the
// service's queue rows that hold nothing it has pending any more (up to
// its oldest stored transaction), and with them (schemaUnref) the batches
// no service holds. The writer gives the pages it frees back to the file
// system later, between batches.
func (s *Store) Complete(ctx context.Context, service string, epoch store.Epoch, id int64) error {
	const op = "error completing transaction"
	release, err := s.enterService(ctx, op, service)
	if err != nil {
		return err
	}
	defer release()
	err = s.write(&request{ctx: ctx, frees: true, work: func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		var deleted int64
		err := tx.StmtContext(ctx, s.st.deleteTxn).QueryRowContext(ctx, service, id).Scan(&deleted)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // unknown or already completed
		}
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.st.deleteQueue).ExecContext(ctx, service); err != nil {
			return fmt.Errorf("deleting queue rows: %w", err)
		}
		s.w.mem.keys.completed(service, id)
		return nil
	}}, nil)
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
	var out []store.Backlog
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.StmtContext(ctx, s.st.backlogs).QueryContext(ctx)
		if err != nil {
			return err
		}
		return scanRows(rows, func() error {
			var b store.Backlog
			var oldest int64
			err := rows.Scan(&b.Service, &b.Txns, &b.Queued, &oldest)
			b.Oldest = time.Unix(0, oldest)
			out = append(out, b)
			return err
		})
	})
	if err != nil {
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
	err = s.write(&request{ctx: ctx, frees: true, alone: true, work: func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		for _, st := range []*sql.Stmt{s.st.purgeQueue, s.st.purgeTxns, s.st.purgeService} {
			if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, service); err != nil {
				return err
			}
		}
		s.w.mem.keys.drop(service)
		return nil
	}}, nil)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, service, err)
	}
	return nil
}
