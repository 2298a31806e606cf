package sqlite_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/asdeliver/scheduler/store/sqlite"
)

// Open the store a scheduler keeps its work in: one file, created on first
// use, held with an exclusive lock by one process at a time.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "asdeliver-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "asdeliver.db") // in production: /var/lib/homeserver/asdeliver.db

	st, err := sqlite.Open(path)
	if err != nil {
		log.Fatal(err) // names the file and what to do
	}
	defer st.Close()

	_, err = sqlite.Open(path) // a second scheduler on the same file
	fmt.Println(err != nil)
	// Output:
	// true
}
