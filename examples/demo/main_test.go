package main

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asdeliver/scheduler/store/postgres/pgtest"
)

// TestMain runs the demo's scheduler processes when the processes
// scenario starts this binary as one.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args, "-child") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDemoOutputIsConsistentAndFitsATerminal: the demo's last progress
// lines agree with its verdict (every service UP with nothing waiting),
// every line fits 100 columns, and one counter has one name.
func TestDemoOutputIsConsistentAndFitsATerminal(t *testing.T) {
	var out bytes.Buffer
	ok, err := run(&out, options{total: 3000, outage: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("a guarantee did not hold:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	for _, l := range lines {
		if len([]rune(l)) > 100 {
			t.Errorf("line of %d columns: %q", len([]rune(l)), l)
		}
	}
	if strings.Contains(out.String(), "retries") {
		t.Error(`the counter is called "failed attempts", not "retries"`)
	}
	var last []string
	for _, l := range lines {
		if strings.Contains(l, " waiting ") {
			last = append(last, l)
		}
	}
	if len(last) < 3 {
		t.Fatalf("no progress lines in:\n%s", out.String())
	}
	for _, l := range last[len(last)-3:] {
		if !strings.Contains(l, " UP ") || !strings.Contains(l, "waiting    0 + 0 txn") {
			t.Errorf("final progress line is not UP with nothing waiting: %q", l)
		}
	}
}

// TestDemoProcessesOnPostgres runs the three-process scenario: every
// acknowledged event delivered in each process's order after the sender to
// one service was killed, and another process took that service over.
func TestDemoProcessesOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	var out bytes.Buffer
	ok, err := runProcesses(&out, options{postgres: dsn, processes: 3, total: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("a guarantee did not hold:\n%s", out.String())
	}
	for _, want := range []string{"-- kill -9 of process", "took slack over"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
}
