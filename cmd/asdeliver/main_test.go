package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/astest"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/postgres/pgtest"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// result is what one run of the command printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the command line args with stdin.
func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// registrationFile writes the registration of service id, delivering to
// url, into dir and returns its path and the registration.
func registrationFile(t *testing.T, dir, id, url string) (string, *scheduler.Registration) {
	t.Helper()
	yaml := fmt.Sprintf(`id: %s
url: %s
as_token: as-secret-%s
hs_token: hs-secret-%s
sender_localpart: %sbot
namespaces:
  users: [{exclusive: true, regex: '@%s_.*'}]
`, id, url, id, id, id, id)
	path := filepath.Join(dir, id+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	reg, err := scheduler.LoadRegistration(path)
	require.NoError(t, err)
	return path, reg
}

// event returns an event from sender, whose body says text.
func event(t *testing.T, id, sender, text string) scheduler.Event {
	t.Helper()
	ev, err := scheduler.ParseEvent(fmt.Appendf(nil, `{"event_id":%q,"room_id":"!r:example.org","sender":%q,`+
		`"type":"m.room.message","content":{"body":%q}}`, id, sender, text))
	require.NoError(t, err)
	return ev
}

// waitFor fails t unless cond holds within 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// storeWithWork returns a SQLite store file that holds, for service irc
// (whose AS was down), a stored transaction whose event quotes irc's
// hs_token and a queued event; and for service gone, which the
// registrations in the returned directory no longer name, a stored
// transaction of one event.
func storeWithWork(t *testing.T) (db, regDir string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, regDir = filepath.Join(dir, "asdeliver.db"), filepath.Join(dir, "appservices")
	require.NoError(t, os.Mkdir(regDir, 0o700))
	as := astest.New(t, "hs-secret-irc")
	as.Down()
	_, irc := registrationFile(t, regDir, "irc", as.URL())
	goneFile, gone := registrationFile(t, regDir, "gone", "http://127.0.0.1:1")

	st, err := sqlite.Open(db)
	require.NoError(t, err)
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{irc, gone},
		Store: st, RetryInitial: time.Hour, RetryMax: time.Hour})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Enqueue(ctx, event(t, "$leak", "@irc_bob:example.org", "my token is hs-secret-irc")))
	waitFor(t, "irc to be down", func() bool {
		st, err := s.Status(ctx, "irc")
		return err == nil && st.State == scheduler.StateDown
	})
	require.NoError(t, s.Enqueue(ctx, event(t, "$2", "@irc_bob:example.org", "two"), event(t, "$g", "@gone_x:example.org", "g")))
	require.NoError(t, s.Stop(ctx))
	require.NoError(t, st.Close())
	require.NoError(t, os.Remove(goneFile))
	return db, regDir
}

func TestStatusTxnsAndShow(t *testing.T) {
	db, regDir := storeWithWork(t)

	r := runCmd(t, "", "-db", db, "-registrations", regDir, "status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(r.stdout, "\n")
	assert.Regexp(t, `^SERVICE\s+STATE\s+QUEUED\s+STORED TXNS\s+OLDEST\s+OLDEST TXN`, lines[0])
	assert.Regexp(t, `^gone\s+UNCONFIGURED\s+0\s+1\s+\S+\s+\d+, \S+ old`, lines[1])
	assert.Regexp(t, `^irc\s+sending\s+1\s+1\s+\S+\s+\d+, \S+ old`, lines[2])

	r = runCmd(t, "", "-db", db, "txns", "irc")
	require.Equal(t, 0, r.code, r.stderr)
	m := regexp.MustCompile(`(?m)^(\d+)\s+1\s+\d+\s+\S+\s+1 events$`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, r.stdout)
	txn := m[1]

	r = runCmd(t, "", "-db", db, "-registrations", regDir, "show", "irc", txn)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `^PUT http://127\.0\.0\.1:\d+/_matrix/app/v1/transactions/`+txn+`\n`, r.stdout)
	assert.Contains(t, r.stdout, "Authorization: Bearer <redacted>")
	assert.Contains(t, r.stdout, `"event_id":"$leak"`)
	assert.Contains(t, r.stdout, "my token is <redacted>")
	assert.NotContains(t, r.stdout, "hs-secret")

	r = runCmd(t, "", "-db", db, "show", "irc", "7")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no transaction 7 is stored")
}

func TestPurgeAsksFirst(t *testing.T) {
	db, _ := storeWithWork(t)

	r := runCmd(t, "no\n", "-db", db, "purge", "gone")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "Delete 1 stored transactions and 0 queued items of gone?")
	assert.Contains(t, r.stderr, "not confirmed: nothing was deleted")
	r = runCmd(t, "", "-db", db, "status")
	assert.Regexp(t, `(?m)^gone\s+sending\s+0\s+1\s`, r.stdout)

	r = runCmd(t, "gone\n", "-db", db, "purge", "gone")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "purged gone")
	r = runCmd(t, "", "-db", db, "purge", "-yes", "irc")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "purged irc: 1 stored transactions and 1 queued items deleted")

	st, err := sqlite.Open(db)
	require.NoError(t, err)
	defer st.Close()
	backlogs, err := st.Backlogs(context.Background())
	require.NoError(t, err)
	assert.Empty(t, backlogs)
}

// TestRefusesAStoreInUse: a SQLite store that a scheduler holds is
// refused with a message saying why, and left as it is.
func TestRefusesAStoreInUse(t *testing.T) {
	db, _ := storeWithWork(t)
	held, err := sqlite.Open(db)
	require.NoError(t, err)
	defer held.Close()
	before, err := os.ReadFile(db)
	require.NoError(t, err)

	for _, args := range [][]string{{"status"}, {"purge", "-yes", "irc"}, {"retry", "irc"}} {
		r := runCmd(t, "", append([]string{"-db", db}, args...)...)
		assert.Equal(t, 1, r.code, args)
		assert.Contains(t, r.stderr, "in use by a running scheduler", args)
	}
	after, err := os.ReadFile(db)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the file changed")
}

func TestBadCommandLines(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing.db")
	r := runCmd(t, "", "-db", missing, "status")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "opens existing stores only")
	assert.NoFileExists(t, missing)

	for _, args := range [][]string{{}, {"-db", missing}, {"-db", missing, "frobnicate"}, {"-db", missing, "txns"},
		{"status"}, {"-db", "x", "-postgres", "y", "status"}} {
		r := runCmd(t, "", args...)
		assert.Equal(t, 2, r.code, args)
		assert.Contains(t, r.stderr, "usage: asdeliver", args)
	}

	db, _ := storeWithWork(t)
	r = runCmd(t, "", "-db", db, "retry", "irc")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "Scheduler.ServiceUp")
	r = runCmd(t, "", "-db", db, "show", "irc", "one")
	assert.Equal(t, 2, r.code)
}

// TestPostgresWhileRunning: on PostgreSQL, status works while a scheduler
// runs, retry cuts its wait short, and purge refuses a service it
// delivers to.
func TestPostgresWhileRunning(t *testing.T) {
	schema := pgtest.NewSchema(t)
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	as := astest.New(t, "hs-secret-irc")
	as.Down()
	_, irc := registrationFile(t, t.TempDir(), "irc", as.URL())
	st, err := postgres.OpenWithOptions(ctx, dsn, postgres.Options{Schema: schema})
	require.NoError(t, err)
	defer st.Close()
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{irc},
		Store: st, RetryInitial: time.Hour, RetryMax: time.Hour})
	require.NoError(t, err)
	require.NoError(t, s.Start(ctx))
	defer func() { _ = s.Stop(ctx) }()
	require.NoError(t, s.Enqueue(ctx, event(t, "$1", "@irc_bob:example.org", "one")))
	waitFor(t, "irc to be down", func() bool {
		st, err := s.Status(ctx, "irc")
		return err == nil && st.State == scheduler.StateDown
	})

	args := []string{"-postgres", dsn, "-schema", schema}
	r := runCmd(t, "", append(args, "status")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `(?m)^irc\s+sending\s+0\s+1\s`, r.stdout)

	r = runCmd(t, "", append(args, "purge", "-yes", "irc")...)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "a running scheduler delivers to irc")

	as.Up()
	r = runCmd(t, "", append(args, "retry", "irc")...)
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, as.WaitDelivered(waitCtx(t), 1), "delivered after retry, long before the hour's wait")

	r = runCmd(t, "", "-postgres", dsn, "-schema", schema+"_typo", "status")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no schema")
}

// waitCtx is a context that ends after 10 s or with t.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ store.Notifier = (*postgres.Store)(nil)
