package postgres

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/store"
)

// slowCommits makes every commit that appends an item whose key starts
// with "late" take d longer, in the commit itself: a deferred constraint
// trigger sleeps after the rows are written, with every lock the
// transaction took still held.
func slowCommits(t *testing.T, schema string, d time.Duration) {
	sleepInCommit(t, schema, "test_late", "INSERT", "items", "substring(NEW.key FROM 1 FOR 4) = 'late'::bytea", d)
}

// sleepInCommit makes every commit on schema that did event (INSERT,
// DELETE) to a row of table for which when holds (SQL over NEW or OLD;
// "" for every row) sleep for d, in a deferred constraint trigger named
// name: the commit holds its locks meanwhile.
func sleepInCommit(t *testing.T, schema, name, event, table, when string, d time.Duration) {
	t.Helper()
	if when != "" {
		when = "WHEN (" + when + ")"
	}
	admin(t, expand(schema, fmt.Sprintf(`
CREATE FUNCTION {s}.%[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(%[2]f); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER %[1]s AFTER %[3]s ON {s}.%[4]s
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW %[5]s
	EXECUTE FUNCTION {s}.%[1]s()`, name, d.Seconds(), event, table, when)))
}

// appendWindow is when one Append ran.
type appendWindow struct {
	start, end time.Time
	late       bool
}

// TestSeqFollowsCommitOrderWithConcurrentWriters: four stores, as four
// processes, append at once to the same services while a fifth forms and
// completes transactions; one writer's commits are made slow on purpose
// now and then. Had an Append that began after the slow one drawn a
// higher Seq and committed first, the consumer would bind it, and then
// the slow item with its lower Seq: Seq would go down. It never does, and
// every item arrives once, in each writer's order.
func TestSeqFollowsCommitOrderWithConcurrentWriters(t *testing.T) {
	schema := newSchema(t)
	consumer := openStore(t, schema, Options{})
	slowCommits(t, schema, 300*time.Millisecond)
	const writers, batches = 4, 30
	services := []string{"a", "b"}
	// wants says which services the i-th entry of a writer is for.
	wants := func(i int) []string {
		if i%2 == 0 {
			return services
		}
		return services[:1]
	}

	var (
		producing sync.WaitGroup
		mu        sync.Mutex
		windows   []appendWindow
	)
	for g := range writers {
		w := openStore(t, schema, Options{MaxConns: 2})
		producing.Go(func() {
			n := 0
			for i := range batches {
				var batch []store.Entry
				late := g == 0 && i%6 == 0
				for j := range 3 {
					key := fmt.Sprintf("w%d-%03d", g, n)
					if late && j == 0 {
						key = "late-" + key
					}
					batch = append(batch, entry(key, fmt.Sprintf(`{"w":%d,"n":%d}`, g, n), wants(n)...))
					n++
				}
				start := time.Now()
				if err := w.Append(t.Context(), batch); err != nil {
					t.Errorf("writer %d: Append: %v", g, err)
					return
				}
				mu.Lock()
				windows = append(windows, appendWindow{start, time.Now(), late})
				mu.Unlock()
			}
		})
	}
	var done atomic.Bool
	go func() { producing.Wait(); done.Store(true) }()

	got := make([][]store.Item, len(services))
	var consuming sync.WaitGroup
	for k, svc := range services {
		e, err := consumer.Claim(t.Context(), svc, "consumer", time.Hour)
		require.NoError(t, err)
		consuming.Go(func() {
			lim := store.Limits{MaxItems: 5, MaxBytes: 1 << 20}
			for {
				finished := done.Load() // before NextTxn: nothing is appended after
				tx, err := consumer.NextTxn(t.Context(), svc, e, 1, lim)
				if err != nil {
					t.Errorf("NextTxn(%s): %v", svc, err)
					return
				}
				if tx == nil {
					if finished {
						return
					}
					time.Sleep(time.Millisecond)
					continue
				}
				got[k] = append(got[k], tx.Items...)
				if err := consumer.Complete(t.Context(), svc, e, tx.ID); err != nil {
					t.Errorf("Complete(%s): %v", svc, err)
					return
				}
			}
		})
	}
	consuming.Wait()
	require.False(t, t.Failed())

	// The slow commits did hold other writers back: some Append began
	// while a slow one was committing and ended after it.
	overtaken := 0
	for _, slow := range windows {
		if !slow.late {
			continue
		}
		for _, o := range windows {
			if !o.late && o.start.After(slow.start) && o.start.Before(slow.end) && o.end.After(slow.end) {
				overtaken++
			}
		}
	}
	require.Positive(t, overtaken, "no Append overlapped a slow commit: the test proved nothing")

	for k, svc := range services {
		items := got[k]
		for i := 1; i < len(items); i++ {
			require.Greater(t, items[i].Seq, items[i-1].Seq,
				"service %s: item %q (Seq %d) was delivered after %q (Seq %d): a later Seq committed first",
				svc, items[i].Key, items[i].Seq, items[i-1].Key, items[i-1].Seq)
		}
		for g := range writers {
			var want, gotKeys []string
			for n := range 3 * batches {
				if slices.Contains(wants(n), svc) {
					want = append(want, fmt.Sprintf("w%d-%03d", g, n))
				}
			}
			for _, it := range items {
				if k := strings.TrimPrefix(it.Key, "late-"); strings.HasPrefix(k, fmt.Sprintf("w%d-", g)) {
					gotKeys = append(gotKeys, k)
				}
			}
			require.Equal(t, want, gotKeys, "service %s, writer %d: items lost, repeated or reordered", svc, g)
		}
	}
	require.Zero(t, count(t, consumer, "items"), "items left after every service completed them")
}
