package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/postgres"
	"github.com/asdeliver/scheduler/store/sqlite"
)

// storeOptions name the store to open.
type storeOptions struct {
	db       string // SQLite file
	postgres string // PostgreSQL DSN
	schema   string // PostgreSQL schema, "" for the default
}

// openedStore is a store asdeliver opened, and closes.
type openedStore interface {
	store.Store
	Close() error
}

// openStore opens the existing store o names. It creates nothing: a path
// or schema that holds no store is an error, not a new empty store.
func openStore(ctx context.Context, o storeOptions) (openedStore, error) {
	switch {
	case o.db != "" && o.postgres != "":
		return nil, fmt.Errorf("%w: name one store: -db or -postgres, not both", errUsage)
	case o.db != "":
		if _, err := os.Stat(o.db); err != nil {
			return nil, fmt.Errorf("%w (asdeliver opens existing stores only)", err)
		}
		st, err := sqlite.Open(o.db)
		if errors.Is(err, sqlite.ErrLocked) {
			return nil, fmt.Errorf("%s is in use by a running scheduler, which holds its lock, and asdeliver "+
				"never opens a store a scheduler is using: stop the homeserver first, or ask the running "+
				"scheduler (its Status and metrics)", o.db)
		}
		return st, err
	case o.postgres != "":
		schema := o.schema
		if schema == "" {
			schema = postgres.DefaultSchema
		}
		if err := checkSchemaExists(ctx, o.postgres, schema); err != nil {
			return nil, err
		}
		return postgres.OpenWithOptions(ctx, o.postgres, postgres.Options{Schema: schema, MaxConns: 2, PollOnly: true})
	default:
		return nil, fmt.Errorf("%w: name the store: -db FILE (SQLite) or -postgres DSN", errUsage)
	}
}

// checkSchemaExists fails unless the database at dsn has schema, so that a
// mistyped name does not create an empty store.
func checkSchemaExists(ctx context.Context, dsn, schema string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		return fmt.Errorf("looking for schema %q: %w", schema, err)
	}
	if !exists {
		return fmt.Errorf("the database has no schema %q: name the store's schema with -schema", schema)
	}
	return nil
}

// loadRegistrations reads the registration files that paths names
// (comma-separated files, or directories of *.yaml and *.yml files) and
// returns them by service ID.
func loadRegistrations(paths string) (map[string]*scheduler.Registration, error) {
	regs := make(map[string]*scheduler.Registration)
	if paths == "" {
		return regs, nil
	}
	var files []string
	for p := range strings.SplitSeq(paths, ",") {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			files = append(files, p)
			continue
		}
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			found, err := filepath.Glob(filepath.Join(p, pattern))
			if err != nil {
				return nil, err
			}
			files = append(files, found...)
		}
	}
	slices.Sort(files)
	for _, f := range files {
		reg, err := scheduler.LoadRegistration(f)
		if err != nil {
			return nil, err
		}
		if other, dup := regs[reg.ID]; dup {
			return nil, fmt.Errorf("%s and %s both register service %q", other.Source, f, reg.ID)
		}
		regs[reg.ID] = reg
	}
	return regs, nil
}
