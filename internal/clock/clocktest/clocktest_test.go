package clocktest

import (
	"context"
	"testing"
	"time"
)

func TestFakeFiresTimersOnlyWhenAdvanced(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := New(start)
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimer(time.Second)
	if got := f.Pending(); len(got) != 2 || got[0] != time.Second || got[1] != 2*time.Second {
		t.Fatalf("Pending() = %v, want [1s 2s]", got)
	}
	select {
	case <-b.C():
		t.Fatal("a timer fired before the clock moved")
	default:
	}
	if step, ok := f.AdvanceToNext(); !ok || step != time.Second {
		t.Fatalf("AdvanceToNext() = %v, %v; want 1s, true", step, ok)
	}
	if got := <-b.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("timer fired with %v", got)
	}
	if !a.Stop() {
		t.Fatal("Stop of a pending timer returned false")
	}
	if a.Stop() {
		t.Fatal("a second Stop returned true")
	}
	if _, ok := f.AdvanceToNext(); ok {
		t.Fatal("a stopped timer is still pending")
	}
	if !f.Now().Equal(start.Add(time.Second)) {
		t.Fatalf("Now() = %v", f.Now())
	}
	select {
	case <-f.NewTimer(0).C():
	default:
		t.Fatal("a zero timer did not fire at once")
	}
}

func TestWaitForTimersReturnsOnceTheyAreMade(t *testing.T) {
	f := New(time.Unix(0, 0))
	done := make(chan error, 1)
	go func() { done <- f.WaitForTimers(context.Background(), 2) }()
	f.NewTimer(time.Minute)
	f.NewTimer(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WaitForTimers(ctx, 3); err != context.Canceled {
		t.Fatalf("WaitForTimers with an ended context = %v", err)
	}
}
