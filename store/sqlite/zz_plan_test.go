package sqlite

import (
	"testing"
)

func TestZZPlan(t *testing.T) {
	s := newStore(t)
	for _, q := range []string{
		`SELECT coalesce((SELECT min(first_seq) - 1 FROM txns WHERE service = 'a'), (SELECT bound_seq FROM services WHERE service = 'a'))`,
		`SELECT q.batch, q.picks, b.n, b.keys FROM queue AS q JOIN batches AS b ON b.seq = q.batch WHERE q.service = 'a' AND q.last <= coalesce((SELECT min(last) FROM queue WHERE service = 'a' AND last > 5), 5) ORDER BY q.last`,
		`SELECT q.batch, q.picks, b.n, b.keys, b.data FROM queue AS q JOIN batches AS b ON b.seq = q.batch WHERE q.service = 'a' AND q.last > 5 ORDER BY q.last`,
		`DELETE FROM queue WHERE service = 'a' AND last <= 5 RETURNING batch`,
	} {
		rows, err := s.db.Query("EXPLAIN QUERY PLAN " + q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var a, b, c int
			var d string
			rows.Scan(&a, &b, &c, &d)
			t.Log(d)
		}
		rows.Close()
		t.Log("--")
	}
}
