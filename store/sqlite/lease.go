package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/asdeliver/scheduler/store"
)

// staleEpoch is the error for an epoch that is not the current one.
func staleEpoch(epoch store.Epoch) error {
	return refuse(fmt.Errorf("epoch %d is not the current lease epoch: %w", epoch, store.ErrStaleEpoch))
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
	err = s.write(&request{ctx: ctx, work: func(ctx context.Context, tx *sql.Tx) error {
		granted = 0
		var curOwner string
		var curEpoch, curExpires, maxEpoch int64
		err := tx.StmtContext(ctx, s.st.lease).QueryRowContext(ctx, service).
			Scan(&curOwner, &curEpoch, &curExpires, &maxEpoch)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if curEpoch != 0 && now < curExpires {
			if curOwner != owner {
				return refuse(fmt.Errorf("service %q is leased to %q until %s: %w",
					service, curOwner, time.Unix(0, curExpires).UTC().Format(time.RFC3339Nano), store.ErrLeaseHeld))
			}
			if _, err := tx.StmtContext(ctx, s.st.extend).ExecContext(ctx, expires, service); err != nil {
				return err
			}
			granted = store.Epoch(curEpoch)
			return nil
		}
		if maxEpoch == math.MaxInt64 {
			return refuse(fmt.Errorf("service %q: lease epochs exhausted", service))
		}
		next := maxEpoch + 1
		if _, err := tx.StmtContext(ctx, s.st.grant).ExecContext(ctx, service, owner, next, expires); err != nil {
			return err
		}
		granted = store.Epoch(next)
		return nil
	}}, nil)
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
	err = s.write(&request{ctx: ctx, work: func(ctx context.Context, tx *sql.Tx) error {
		if err := s.checkEpoch(ctx, tx, service, epoch); err != nil {
			return err
		}
		_, err := tx.StmtContext(ctx, s.st.release).ExecContext(ctx, service)
		return err
	}}, nil)
	if err != nil {
		return fmt.Errorf("%s on %q: %w", op, service, err)
	}
	return nil
}
