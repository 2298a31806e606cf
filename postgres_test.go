package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
)

// openPostgres opens a store on schema, as one process of several would,
// and closes it when t ends.
func openPostgres(t *testing.T, schema string) *postgres.Store {
	t.Helper()
	st, err := postgres.OpenWithOptions(context.Background(), pgtest.DSN(t), postgres.Options{Schema: schema})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	return st
}

// TestPostgresProcessesShareOneSenderAndHandOverOnStop: two schedulers on
// one schema stand for two processes. Both enqueue; one sends, one PUT at a
// time, every event once and in each process's order. When the sender
// stops cleanly with a transaction left stored, the other takes over on
// the release alone (its poll is an hour away) and resends it.
func TestPostgresProcessesShareOneSenderAndHandOverOnStop(t *testing.T) {
	schema := pgtest.NewSchema(t)
	ctx := context.Background()
	as := astest.New(t, "tok")
	config := func() Config {
		cfg := testConfig(t, reg("a", as, "@a_.*"))
		cfg.Store = openPostgres(t, schema)
		cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
		return cfg
	}
	first, err := New(config())
	require.NoError(t, err)
	require.NoError(t, first.Start(ctx))
	defer func() { _ = first.Stop(ctx) }()
	require.NoError(t, first.Enqueue(ctx, event("$first", "!r", "@a_x")))
	waitDelivered(t, as, 1) // the first process holds the lease
	second := start(t, config())

	const n = 40
	for i := range n {
		require.NoError(t, first.Enqueue(ctx, event(fmt.Sprintf("$1-%d", i), "!r", "@a_x")))
		require.NoError(t, second.Enqueue(ctx, event(fmt.Sprintf("$2-%d", i), "!r", "@a_x")))
	}
	waitDelivered(t, as, 1+2*n)
	for _, id := range as.Delivered() {
		assert.Equal(t, 1, as.Deliveries(id), id)
	}
	for _, p := range []string{"$1-", "$2-"} {
		last := -1
		for _, id := range as.Delivered() {
			var i int
			if _, err := fmt.Sscanf(id, p+"%d", &i); err == nil {
				assert.Greater(t, i, last, "%s delivered out of order", id)
				last = i
			}
		}
	}

	// A transaction left stored by the sender, which then stops.
	as.Down()
	require.NoError(t, second.Enqueue(ctx, event("$left", "!r", "@a_x")))
	waitDown(t, first, "a")
	require.NoError(t, first.Stop(ctx))
	as.Up()
	waitDelivered(t, as, 2+2*n)
	assert.Equal(t, 1, as.Stats().MaxInFlight, "never two PUTs in flight at once")
	assert.Empty(t, as.Problems())
}
