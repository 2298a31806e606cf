package scheduler

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/lib/pq"              // database/sql driver "postgres", as Dendrite uses
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
)

// TestEnqueueTxDeliversOnlyWhatCommits: events queued in a pgx
// transaction are delivered once it commits, and never when it rolls
// back; an event no service wants writes nothing.
func TestEnqueueTxDeliversOnlyWhatCommits(t *testing.T) {
	schema := pgtest.NewSchema(t)
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@a_.*"))
	st := openPostgres(t, schema)
	cfg.Store = st
	s := start(t, cfg)

	conn, err := pgx.Connect(ctx, pgtest.DSN(t))
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.EnqueueTx(ctx, st.InTx(tx), event("$rolled-back", "!r", "@a_x")))
	require.NoError(t, tx.Rollback(ctx))

	require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return s.EnqueueTx(ctx, st.InTx(tx),
			event("$committed-1", "!r", "@a_x"), event("$nobody", "!r", "@b_x"), event("$committed-2", "!r", "@a_x"))
	}))
	require.NoError(t, s.Enqueue(ctx, event("$after", "!r", "@a_x")))
	waitDelivered(t, as, 3)
	assert.Equal(t, []string{"$committed-1", "$committed-2", "$after"}, as.Delivered())

	// A transaction that wants nothing writes nothing: nothing to forward.
	require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return s.EnqueueTx(ctx, st.InTx(tx), event("$nobody-2", "!r", "@b_x"))
	}))
	var outbox int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "outbox"}.Sanitize()).Scan(&outbox))
	assert.Zero(t, outbox)
}

// TestEnqueueTxWithDatabaseSQL: the same through database/sql, with the
// lib/pq driver Dendrite uses and with pgx's stdlib.
func TestEnqueueTxWithDatabaseSQL(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			schema := pgtest.NewSchema(t)
			ctx := context.Background()
			as := astest.New(t, "tok")
			cfg := testConfig(t, reg("a", as, "@a_.*"))
			st := openPostgres(t, schema)
			cfg.Store = st
			s := start(t, cfg)

			db, err := sql.Open(driver, pgtest.DSN(t))
			require.NoError(t, err)
			defer func() { _ = db.Close() }()

			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, s.EnqueueTx(ctx, st.InSQLTx(tx), event("$rolled-back", "!r", "@a_x")))
			require.NoError(t, tx.Rollback())

			tx, err = db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, s.EnqueueTx(ctx, st.InSQLTx(tx), event("$committed", "!r", "@a_x")))
			require.NoError(t, tx.Commit())
			require.NoError(t, s.Enqueue(ctx, event("$after", "!r", "@a_x")))
			waitDelivered(t, as, 2)
			assert.Equal(t, []string{"$committed", "$after"}, as.Delivered())
		})
	}
}

// TestEnqueueTxChecksLikeEnqueue: EnqueueTx refuses what Enqueue refuses,
// and a transaction of another store, before it writes anything.
func TestEnqueueTxChecksLikeEnqueue(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	other := &fakeTxAppender{st: memory.New()}
	s, err := New(testConfig(t, reg("a", as, "@a_.*")))
	require.NoError(t, err)
	own := &fakeTxAppender{st: s.cfg.Store}

	assert.ErrorIs(t, s.EnqueueTx(ctx, own, event("$e", "!r", "@a_x")), ErrNotStarted)
	require.NoError(t, s.Start(ctx))
	assert.ErrorIs(t, s.EnqueueTx(ctx, other, event("$e", "!r", "@a_x")), ErrForeignTx)
	assert.ErrorIs(t, s.EnqueueTx(ctx, nil, event("$e", "!r", "@a_x")), ErrForeignTx)
	assert.ErrorIs(t, s.EnqueueTx(ctx, own, Event{Raw: []byte(`{"room_id":`)}), ErrInvalidEvent)
	assert.Zero(t, own.calls)

	own.err = errors.New("connection lost")
	err = s.EnqueueTx(ctx, own, event("$e", "!r", "@a_x"))
	assert.ErrorIs(t, err, own.err)
	assert.ErrorContains(t, err, "caller's transaction")

	own.err = nil
	require.NoError(t, s.EnqueueTx(ctx, own, event("$e", "!r", "@a_x")))
	require.Len(t, own.entries, 1)
	assert.Equal(t, []string{"a"}, own.entries[0].Services)
	require.NoError(t, s.Stop(ctx))
	assert.ErrorIs(t, s.EnqueueTx(ctx, own, event("$f", "!r", "@a_x")), ErrStopped)
}

// fakeTxAppender records what EnqueueTx writes, for a Store st.
type fakeTxAppender struct {
	st      store.Store
	err     error
	calls   int
	entries []store.Entry
}

func (f *fakeTxAppender) Store() store.Store { return f.st }

func (f *fakeTxAppender) AppendTx(_ context.Context, entries []store.Entry) error {
	f.calls++
	if f.err != nil {
		return f.err
	}
	f.entries = append(f.entries, entries...)
	return nil
}
