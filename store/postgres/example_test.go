package postgres_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"

	"github.com/asdeliver/scheduler/store"
	"github.com/asdeliver/scheduler/store/postgres"
)

// Open a store in the homeserver's database. Every scheduler process of
// the deployment opens the same database, and so the same schema; the
// store creates and migrates the schema on first use.
func ExampleOpen() {
	ctx := context.Background()
	st, err := postgres.Open(ctx, "postgres://synapse@localhost:5432/synapse?sslmode=disable")
	if err != nil {
		log.Fatal(err) // names what to check: the DSN, the server, the schema
	}
	defer st.Close()

	// Pass st as scheduler.Config.Store. A scheduler finds its wake-ups
	// between processes through the store.Notifier it implements.
	var _ store.Notifier = st
}

// Queue an event for the application services in the same transaction
// that stores it in the homeserver's own tables: it is delivered if and
// only if the transaction commits.
func ExampleStore_AppendTx() {
	ctx := context.Background()
	const dsn = "postgres://synapse@localhost:5432/synapse?sslmode=disable"
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	event := []byte(`{"event_id":"$abc","room_id":"!r:example.org","type":"m.room.message","sender":"@u:example.org","content":{}}`)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO events (event_id, json) VALUES ($1, $2)", "$abc", event); err != nil {
			return err
		}
		return st.AppendTx(ctx, tx, []store.Entry{{
			Item:     store.Item{Kind: store.KindEvent, Key: "$abc", Data: event},
			Services: []string{"irc-bridge"},
		}})
	})
	if err != nil {
		log.Fatal(err)
	}
}
