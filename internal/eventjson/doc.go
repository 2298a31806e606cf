// Package eventjson checks the JSON of the events the scheduler is handed
// and finds their top-level event_id, room_id, sender, type and state_key,
// in one pass and without allocating.
//
// It accepts exactly what encoding/json's Valid and utf8.Valid both accept:
// an application service that cannot parse a transaction refuses it
// forever, so nothing invalid may be stored. It is hand-written because
// validation runs for every event in Enqueue, where encoding/json would
// cost several times as much (see BenchmarkValidateEventStdlib in the root
// package).
package eventjson
