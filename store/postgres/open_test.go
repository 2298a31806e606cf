package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// TestOpenFailsClearlyOnABadDSN needs no server: nothing listens on port 1.
func TestOpenFailsClearlyOnABadDSN(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		dsn, want string
	}{
		{"postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5", "cannot connect to the database"},
		{"postgres://postgres@[::1/test", "the DSN does not parse"},
		{"host=127.0.0.1 port=notanumber", "the DSN does not parse"},
	} {
		s, err := Open(ctx, c.dsn)
		require.Nil(t, s)
		require.ErrorContains(t, err, c.want, c.dsn)
	}
}

func TestOpenWithOptionsRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"negative MaxConns":     {MaxConns: -1},
		"negative PollInterval": {PollInterval: -time.Second},
		"schema name too long":  {Schema: string(make([]byte, 64))},
		"schema name with NUL":  {Schema: "a\x00b"},
	} {
		s, err := OpenWithOptions(t.Context(), "postgres://127.0.0.1:1/x", opts)
		require.Nil(t, s, name)
		require.ErrorContains(t, err, "Options.", name)
	}
}

func TestOpenRefusesASchemaOfAnotherApplication(t *testing.T) {
	dsn := testDSN(t)
	for name, setup := range map[string]string{
		"tables of its own": `CREATE TABLE {s}.users (id int)`,
		"a schema_version table of another application": `CREATE TABLE {s}.schema_version (app text, version int);
			INSERT INTO {s}.schema_version VALUES ('synapse', 3)`,
		"a schema_version table of another shape": `CREATE TABLE {s}.schema_version (version int)`,
	} {
		t.Run(name, func(t *testing.T) {
			schema := newSchema(t)
			admin(t, "CREATE SCHEMA "+ident(schema))
			admin(t, expand(schema, setup))
			s, err := OpenWithOptions(t.Context(), dsn, Options{Schema: schema})
			require.Nil(t, s)
			require.ErrorIs(t, err, ErrForeignSchema)
			require.ErrorContains(t, err, "choose another Options.Schema")
		})
	}
}

func TestOpenUsesAnEmptySchema(t *testing.T) {
	schema := newSchema(t)
	admin(t, "CREATE SCHEMA "+ident(schema))
	s := openStore(t, schema, Options{})
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$1", "one", "a")}))
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	schema := newSchema(t)
	s := openStore(t, schema, Options{})
	require.NoError(t, s.Close())
	admin(t, expand(schema, `UPDATE {s}.schema_version SET version = version + 1`))
	s, err := OpenWithOptions(t.Context(), testDSN(t), Options{Schema: schema})
	require.Nil(t, s)
	require.ErrorIs(t, err, ErrSchemaTooNew)
	require.ErrorContains(t, err, "upgrade asdeliver")
}

// TestConcurrentOpensMigrateOnce: processes that start at once on a new
// schema wait for the first one's migration.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	schema := newSchema(t)
	const n = 6
	stores := make([]*Store, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := OpenWithOptions(t.Context(), testDSN(t), Options{Schema: schema, MaxConns: 1})
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			require.NoError(t, s.Close())
		}
	}
	require.False(t, t.Failed())
	s := openStore(t, schema, Options{})
	var version int
	require.NoError(t, s.pool.QueryRow(t.Context(), expand(schema, "SELECT version FROM {s}.schema_version")).Scan(&version))
	require.Equal(t, schemaVersion, version)
	require.Equal(t, 1, count(t, s, "schema_version"))
}

// TestConnectionLostMidCommit: the server ends an Append's connection
// while it commits. The Append reports an error, stores nothing, and
// what was acknowledged before is intact; the store goes on working on a
// new connection.
func TestConnectionLostMidCommit(t *testing.T) {
	schema := newSchema(t)
	s, err := OpenWithOptions(t.Context(), testDSN(t)+"&application_name=asdeliver_cut_test", Options{Schema: schema})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	slowCommits(t, schema, time.Minute)
	e, err := s.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$before", "acknowledged", "a")}))

	done := make(chan error, 1)
	go func() {
		done <- s.Append(context.Background(), []store.Entry{entry("$x", "x", "a"), entry("late-cut", "cut", "a")})
	}()
	var pid int
	eventually(t, "the Append sleeps in its commit", func() bool {
		err := s.pool.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity
			WHERE application_name = 'asdeliver_cut_test' AND wait_event = 'PgSleep'`).Scan(&pid)
		return err == nil
	})
	admin(t, "SELECT pg_terminate_backend($1)", pid)
	err = <-done
	require.Error(t, err, "an Append whose commit was cut reported success")
	require.ErrorContains(t, err, "appending entries")
	t.Logf("the Append reported: %v", err)

	require.NoError(t, s.Append(t.Context(), []store.Entry{entry("$after", "after", "a")}))
	require.Equal(t, []string{"$before", "$after"}, keys(drain(t, s, "a", e)))
	require.Zero(t, count(t, s, "items"))
}

// TestNamesThatPostgreSQLCannotStore: service IDs and owners must be text
// without NUL; keys and data may hold any bytes (see storetest).
func TestNamesThatPostgreSQLCannotStore(t *testing.T) {
	s := newStore(t)
	for _, bad := range []string{"nul\x00", "\xff\xfe not UTF-8"} {
		require.ErrorIs(t, s.Append(t.Context(), []store.Entry{entry("$1", "x", bad)}), store.ErrInvalid)
		_, err := s.Claim(t.Context(), bad, "owner", time.Hour)
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = s.Claim(t.Context(), "a", bad, time.Hour)
		require.ErrorIs(t, err, store.ErrInvalid)
		_, err = s.NextTxn(t.Context(), bad, 1, 1, lots)
		require.ErrorIs(t, err, store.ErrInvalid)
		require.ErrorIs(t, s.ServiceUp(t.Context(), bad), store.ErrInvalid, fmt.Sprintf("%q", bad))
	}
	require.Zero(t, count(t, s, "services"))
}
