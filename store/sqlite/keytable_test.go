package sqlite

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKeyTableMatchesAMap runs random adds and removes, with repeated
// sums, removals of absent pairs and seqs far apart (rebases), against a
// plain map, and checks every lookup and the count after each step.
func TestKeyTableMatchesAMap(t *testing.T) {
	type pair struct {
		sum uint64
		seq int64
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var tab keyTable
	want := map[pair]bool{}
	var held []pair
	seq := int64(1 << 40)
	for step := range 200_000 {
		switch r := rng.IntN(10); {
		case r < 5 || len(held) == 0:
			// Few distinct sums, so that runs and repeats are common.
			p := pair{rng.Uint64N(5000) << 3, seq}
			seq += 1 + rng.Int64N(3)
			if step%50_000 == 0 {
				seq += 1 << 31 // far ahead: the base moves once old pairs go
			}
			if !tab.holds(p.seq) {
				continue
			}
			tab.add(p.sum, p.seq)
			want[p] = true
			held = append(held, p)
		case r < 9:
			i := rng.IntN(len(held))
			p := held[i]
			held = slices.Delete(held, i, i+1)
			require.True(t, tab.remove(p.sum, p.seq), "step %d: remove %v", step, p)
			delete(want, p)
		default:
			require.False(t, tab.remove(rng.Uint64N(5000)<<3, seq+1), "an absent pair")
		}
		require.Equal(t, len(want), tab.n)
		if step%97 == 0 && len(held) > 0 {
			p := held[rng.IntN(len(held))]
			var got []int64
			tab.each(p.sum, func(s int64) bool { got = append(got, s); return true })
			var exp []int64
			for q := range want {
				if q.sum == p.sum {
					exp = append(exp, q.seq)
				}
			}
			slices.Sort(got)
			slices.Sort(exp)
			require.Equal(t, exp, got, "step %d: seqs of sum %d", step, p.sum)
		}
	}
	require.False(t, tab.holds(seq+1<<33), "a span of 2^32 seqs")
}
