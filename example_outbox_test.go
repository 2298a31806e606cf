package scheduler_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asdeliver/scheduler"
	"github.com/asdeliver/scheduler/store/postgres"
)

// A homeserver on PostgreSQL stores an event and queues it for the
// application services in one transaction: the event is delivered if and
// only if the transaction commits. With database/sql, pass
// st.InSQLTx(tx) instead.
func ExampleScheduler_EnqueueTx() {
	ctx := context.Background()
	const dsn = "postgres://dendrite@localhost:5432/dendrite?sslmode=disable"
	st, err := postgres.Open(ctx, dsn) // the scheduler's tables, in schema asdeliver
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	irc, err := scheduler.LoadRegistration("/etc/dendrite/appservices/irc.yaml")
	if err != nil {
		log.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Config{ServerName: "example.org", Services: []*scheduler.Registration{irc}, Store: st})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer s.Stop(ctx)

	db, err := pgxpool.New(ctx, dsn) // the homeserver's own pool
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	raw := []byte(`{"event_id":"$1:example.org","room_id":"!chat:example.org","type":"m.room.message",` +
		`"sender":"@irc_alice:example.org","content":{"msgtype":"m.text","body":"hi"}}`)
	ev, err := scheduler.ParseEvent(raw)
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO events (event_id, json) VALUES ($1, $2)", ev.ID, raw); err != nil {
			return err
		}
		return s.EnqueueTx(ctx, st.InTx(tx), ev) // an error rolls the whole transaction back
	})
	if err != nil {
		log.Fatal(err) // nothing stored, nothing queued
	}
}
