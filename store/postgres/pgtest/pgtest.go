// Package pgtest gives tests a PostgreSQL schema of their own: the
// database named by ASDELIVER_TEST_POSTGRES, and a fresh schema in it that
// is dropped when the test ends, so tests and runs never see each other's
// rows. A test calls DSN or NewSchema first; both skip it, saying why,
// when the variable is unset (a plain `go test ./...` on a machine without
// PostgreSQL).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DSNEnv names the variable that holds the DSN of the test database.
const DSNEnv = "ASDELIVER_TEST_POSTGRES"

// DSN returns the DSN of the test database, or skips t when there is none.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(DSNEnv)
	if dsn == "" {
		t.Skipf("%s is not set: set it to the DSN of a PostgreSQL database in which the tests may create schemas, "+
			"such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable, to run the PostgreSQL tests", DSNEnv)
	}
	return dsn
}

// Exec runs sql on a connection of its own, outside any store, failing t
// on error.
func Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, DSN(t))
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// NewSchema returns the name of a schema that no other test uses (it does
// not create it: opening a store does) and drops it, with everything in
// it, when t ends.
func NewSchema(t testing.TB) string {
	t.Helper()
	DSN(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "asdeliver_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() { Exec(t, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE") })
	return name
}
