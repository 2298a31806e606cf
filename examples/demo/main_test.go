package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestDemoOutputIsConsistentAndFitsATerminal: the demo's last progress
// lines agree with its verdict (every service UP with nothing waiting),
// every line fits 100 columns, and one counter has one name.
func TestDemoOutputIsConsistentAndFitsATerminal(t *testing.T) {
	var out bytes.Buffer
	ok, err := run(&out, "", 3000, 1500*time.Millisecond, false)
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
