package lifecycle

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStopLetsGoroutinesFinishWhatTheyBegan(t *testing.T) {
	g := New(context.Background())
	var finished atomic.Bool
	started := make(chan struct{})
	g.Go(func(ctx context.Context) {
		close(started)
		<-g.Stopping()
		finished.Store(true) // begun work finishes after Stopping closes
	})
	<-started
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !finished.Load() {
		t.Fatal("Stop returned before the goroutine finished")
	}
	if g.Go(func(context.Context) { t.Error("a goroutine ran after Stop") }) {
		t.Fatal("Go after Stop reported that it started a goroutine")
	}
}

func TestStopCancelsTheRunContextWhenItsContextEnds(t *testing.T) {
	g := New(context.Background())
	var cancelled atomic.Bool
	g.Go(func(ctx context.Context) {
		<-ctx.Done() // ignores Stopping: only the cancel ends it
		cancelled.Store(true)
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Stop(ctx); err != context.Canceled {
		t.Fatalf("Stop with an ended context returned %v, want context.Canceled", err)
	}
	if !cancelled.Load() {
		t.Fatal("Stop returned before the cut-short goroutine returned")
	}
}

func TestEveryConcurrentStopWaitsForTheGoroutines(t *testing.T) {
	g := New(context.Background())
	release := make(chan struct{})
	var returned atomic.Bool
	g.Go(func(ctx context.Context) {
		<-release
		returned.Store(true)
	})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := g.Stop(context.Background()); err != nil {
				t.Errorf("Stop: %v", err)
			}
			if !returned.Load() {
				t.Error("a Stop returned while a goroutine was still running")
			}
		})
	}
	<-g.Stopping()
	time.Sleep(10 * time.Millisecond) // let the Stops reach their wait
	close(release)
	wg.Wait()
}

func TestRunContextKeepsValuesButNotTheParentsEnd(t *testing.T) {
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	g := New(parent)
	cancel()
	got := make(chan context.Context, 1)
	g.Go(func(ctx context.Context) { got <- ctx })
	ctx := <-got
	if ctx.Value(key{}) != "v" {
		t.Error("the run context lost the parent's values")
	}
	if ctx.Err() != nil {
		t.Error("the run context ended with its parent")
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Error("the run context outlived Stop")
	}
}
