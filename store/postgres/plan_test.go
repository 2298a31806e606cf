package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// planNode is the part of a node of EXPLAIN (ANALYZE, FORMAT JSON) that
// the plan tests read.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	ActualRows   float64    `json:"Actual Rows"`
	Removed      float64    `json:"Rows Removed by Filter"`
	ActualLoops  float64    `json:"Actual Loops"`
	Plans        []planNode `json:"Plans"`
}

// rowsFrom returns the most rows that one node over relation read in all
// its loops (those it returned and those its filter removed), and the
// node's type.
func (n planNode) rowsFrom(relation string) (rows float64, nodeType string) {
	if n.RelationName == relation {
		rows, nodeType = (n.ActualRows+n.Removed)*n.ActualLoops, n.NodeType
	}
	for _, c := range n.Plans {
		if r, t := c.rowsFrom(relation); r > rows {
			rows, nodeType = r, t
		}
	}
	return rows, nodeType
}

// planConn is a connection of a store's pool, with the settings the
// store's own connections have, on which the tests prepare the store's
// statements as pgx does for the store: each keeps the plan made at its
// first execution.
type planConn struct {
	t    *testing.T
	conn *pgxpool.Conn
}

func newPlanConn(t *testing.T, s *Store) *planConn {
	conn, err := s.pool.Acquire(t.Context())
	require.NoError(t, err)
	t.Cleanup(conn.Release)
	return &planConn{t, conn}
}

// exec runs sql in a transaction that it rolls back, so that statements
// that write change nothing.
func (c *planConn) exec(sql string) []byte {
	c.t.Helper()
	tx, err := c.conn.Begin(c.t.Context())
	require.NoError(c.t, err)
	defer func() { _ = tx.Rollback(c.t.Context()) }()
	var out []byte
	rows, err := tx.Query(c.t.Context(), sql)
	require.NoError(c.t, err)
	for rows.Next() {
		if len(rows.RawValues()) > 0 {
			out = append([]byte(nil), rows.RawValues()[0]...)
		}
	}
	require.NoError(c.t, rows.Err())
	return out
}

// prepare prepares stmt as name and runs it once with args, which fixes
// its plan.
func (c *planConn) prepare(name, types, stmt string, args ...any) {
	c.t.Helper()
	_, err := c.conn.Exec(c.t.Context(), "PREPARE "+name+" ("+types+") AS "+stmt)
	require.NoError(c.t, err)
	c.exec(execute(c.t, name, args))
}

// explain runs the prepared statement name with args under EXPLAIN
// ANALYZE and returns its plan.
func (c *planConn) explain(name string, args ...any) planNode {
	c.t.Helper()
	out := c.exec("EXPLAIN (ANALYZE, FORMAT JSON) " + execute(c.t, name, args))
	if testing.Verbose() {
		c.t.Logf("%s", out)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	require.NoError(c.t, json.Unmarshal(out, &plans))
	require.Len(c.t, plans, 1)
	return plans[0].Plan
}

// execute returns the EXECUTE of name with args as literals: EXPLAIN
// takes no parameters.
func execute(t *testing.T, name string, args []any) string {
	params := make([]string, len(args))
	for i, a := range args {
		params[i] = literal(t, a)
	}
	return "EXECUTE " + name + " (" + strings.Join(params, ", ") + ")"
}

// literal returns v as an SQL literal, for the types explain is given.
func literal(t *testing.T, v any) string {
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	list := func(n int, item func(int) string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = item(i)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]"
	}
	switch v := v.(type) {
	case nil:
		return "NULL"
	case bool, int, int64:
		return fmt.Sprint(v)
	case string:
		return quote(v)
	case []string:
		return list(len(v), func(i int) string { return quote(v[i]) }) + "::text[]"
	case []int16:
		return list(len(v), func(i int) string { return fmt.Sprint(v[i]) }) + "::smallint[]"
	case []int32:
		return list(len(v), func(i int) string { return fmt.Sprint(v[i]) }) + "::integer[]"
	case [][]byte:
		return list(len(v), func(i int) string { return fmt.Sprintf("'\\x%x'::bytea", v[i]) })
	case []time.Time:
		require.Empty(t, v, "literal: only an empty list of times")
		return "'{}'::timestamptz[]"
	}
	t.Fatalf("literal: no literal for %T", v)
	return ""
}

// TestStatementsReadTheHeadNotTheBacklog: statements prepared while the
// tables were empty, and analyzed so (after a drain, autovacuum says so),
// as a store's connections prepare them, still read a backlog of 20,000
// items that built up since through its indexes: forming a transaction
// reads the page it asks for, and the pending-key lookup of an Append
// probes the key index instead of scanning items or walking the service's
// queue. Plans made for such statistics scanned the backlog in each call.
func TestStatementsReadTheHeadNotTheBacklog(t *testing.T) {
	s := newStore(t)
	admin(t, expand(s.schema, `ANALYZE {s}.queue; ANALYZE {s}.items`))
	epoch, err := s.Claim(t.Context(), "a", "owner", time.Hour)
	require.NoError(t, err)
	lim := store.Limits{MaxItems: 100, MaxBytes: 1 << 20}
	// Item i of the backlog is wanted by b too when i%10 == 0, so that
	// completing a transaction has shared items to look at.
	_, err = s.Claim(t.Context(), "b", "owner", time.Hour)
	require.NoError(t, err)
	pageArgs := []any{"a", int64(epoch), nil, firstPage(lim)}
	// One pair whose key will be pending, one whose will not.
	appendArgs := []any{[]int16{int16(store.KindEvent), int16(store.KindEvent)}, [][]byte{[]byte("$150"), []byte("$new")},
		[][]byte{[]byte("x"), []byte("y")}, []time.Time{}, []int32{1, 2}, []string{"a", "a"}, false, s.channel, "{}"}
	c := newPlanConn(t, s)
	c.prepare("test_page", "text, bigint, bigint, integer", s.sql.page, pageArgs...)
	c.prepare("test_append", "smallint[], bytea[], bytea[], timestamptz[], integer[], text[], boolean, text, text",
		s.sql.appendItems, appendArgs...)
	for name, stmt := range map[string]string{"test_lock": s.sql.lockTxnShared, "test_complete": s.sql.complete} {
		c.prepare(name, "text, bigint, bigint", stmt, "a", int64(epoch), int64(1))
	}
	c.prepare("test_txns", "text, bigint", s.sql.txns, "a", int64(1))
	for name, stmt := range map[string]string{"test_lock_all": s.sql.lockAllShared, "test_purge": s.sql.purge} {
		c.prepare(name, "text, bigint", stmt, "a", int64(epoch))
	}

	const backlog, perCall = 20_000, 1000
	for k := range backlog / perCall {
		var entries []store.Entry
		for i := range perCall {
			services := []string{"a"}
			if i%10 == 0 {
				services = append(services, "b")
			}
			entries = append(entries, entry(fmt.Sprintf("$%d", k*perCall+i), "x", services...))
		}
		require.NoError(t, s.Append(t.Context(), entries))
	}

	page := c.explain("test_page", pageArgs...)
	for _, table := range []string{"queue", "items"} {
		rows, node := page.rowsFrom(table)
		require.LessOrEqual(t, rows, float64(firstPage(lim)),
			"forming a transaction read %v rows of %s (%s) for a page of %d", rows, table, node, firstPage(lim))
	}
	lookup := c.explain("test_append", appendArgs...)
	rows, node := lookup.rowsFrom("queue")
	require.LessOrEqual(t, rows, 2.0, "the pending-key lookup of two pairs read %v queue rows (%s)", rows, node)
	rows, node = lookup.rowsFrom("items")
	require.LessOrEqual(t, rows, 2.0, "the pending-key lookup of two pairs read %v items (%s)", rows, node)

	// Completing, or listing, a transaction of 100 reads its rows.
	txn, err := s.NextTxn(t.Context(), "a", epoch, 1, lim)
	require.NoError(t, err)
	require.Len(t, txn.Items, 100)
	for _, name := range []string{"test_lock", "test_complete"} {
		plan := c.explain(name, "a", int64(epoch), txn.ID)
		for _, table := range []string{"queue", "items", "txns"} {
			rows, node := plan.rowsFrom(table)
			require.LessOrEqual(t, rows, 100.0, "%s read %v rows of %s (%s) for a transaction of 100", name, rows, table, node)
		}
	}
	plan := c.explain("test_txns", "a", int64(1))
	for _, table := range []string{"queue", "items", "txns"} {
		rows, node := plan.rowsFrom(table)
		require.LessOrEqual(t, rows, 100.0, "listing a transaction of 100 read %v rows of %s (%s)", rows, table, node)
	}

	// Purging reads the service's queue once, whatever the plan.
	for _, name := range []string{"test_lock_all", "test_purge"} {
		plan := c.explain(name, "a", int64(epoch))
		for _, table := range []string{"queue", "items"} {
			rows, node := plan.rowsFrom(table)
			require.LessOrEqual(t, rows, float64(backlog), "%s read %v rows of %s (%s) for a queue of %d", name, rows, table, node, backlog)
		}
	}
}
