package storetest_test

import (
	"testing"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/memory"
	"github.com/asdeliver/scheduler/store/storetest"
)

// A Store implementation proves it keeps the contract with two calls in
// its own tests: Run gives each case a fresh store, RunReopen closes and
// reopens one on the same directory to check what must survive a restart.
// (The store here is the memory one, which Run accepts; it cannot reopen.)
func ExampleRun() {
	// In a _test.go file of the store's package:
	_ = func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			st := memory.New()
			t.Cleanup(func() { _ = st.Close() })
			return st
		})
	}
}
