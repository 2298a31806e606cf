package postgres

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
	"github.com/asdeliver/scheduler/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testDSN, admin and newSchema give each test a schema of its own.
func testDSN(t testing.TB) string                 { t.Helper(); return pgtest.DSN(t) }
func admin(t testing.TB, sql string, args ...any) { t.Helper(); pgtest.Exec(t, sql, args...) }
func newSchema(t testing.TB) string               { t.Helper(); return pgtest.NewSchema(t) }

// openStore opens a store in schema and closes it when t ends.
func openStore(t testing.TB, schema string, opts Options) *Store {
	t.Helper()
	opts.Schema = schema
	s, err := OpenWithOptions(context.Background(), testDSN(t), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// newStore opens a store in a fresh schema.
func newStore(t testing.TB) *Store {
	return openStore(t, newSchema(t), Options{})
}

func TestStore(t *testing.T) {
	testDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
}

func TestStorePollOnly(t *testing.T) {
	testDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openStore(t, newSchema(t), Options{PollOnly: true, MaxConns: 2})
	})
}

func TestStoreReopen(t *testing.T) {
	dsn := testDSN(t)
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		// A subtest opens its directory several times, and t is the
		// subtest: its first open makes the schema.
		v, _ := reopenSchemas.LoadOrStore(dir, &reopened{})
		r := v.(*reopened)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.schema == "" {
			r.schema = newSchema(t)
			// Runs before the schema is dropped: close the last store
			// first (the suite closes it again, which Close allows).
			t.Cleanup(func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.last != nil {
					_ = r.last.Close()
				}
				reopenSchemas.Delete(dir)
			})
		}
		s, err := OpenWithOptions(t.Context(), dsn, Options{Schema: r.schema})
		require.NoError(t, err)
		r.last = s
		return s
	})
}

// reopened maps the directories of RunReopen to schemas.
var reopenSchemas sync.Map

type reopened struct {
	mu     sync.Mutex
	schema string
	last   *Store
}

func entry(key, data string, services ...string) store.Entry {
	return store.Entry{
		Item:     store.Item{Kind: store.KindEvent, Key: key, Data: []byte(data)},
		Services: services,
	}
}

var lots = store.Limits{MaxItems: 1 << 20, MaxBytes: 1 << 30}

// count returns the number of rows of table in the store's schema.
func count(t testing.TB, s *Store, table string) int {
	t.Helper()
	var n int
	require.NoError(t, s.pool.QueryRow(t.Context(), expand(s.schema, "SELECT count(*) FROM {s}."+table)).Scan(&n))
	return n
}

// keys returns the keys of items.
func keys(items []store.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.Key
	}
	return out
}
