package window

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRTTSetAgainstSortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var set rttSet
	var ref []int64
	for step := range 20000 {
		if len(ref) > 0 && rng.IntN(10) < 4 {
			v := ref[rng.IntN(len(ref))]
			set.remove(v)
			i, _ := slices.BinarySearch(ref, v)
			ref = slices.Delete(ref, i, i+1)
		} else {
			v := rng.Int64N(500) // many duplicates
			set.insert(v)
			i, _ := slices.BinarySearch(ref, v)
			ref = slices.Insert(ref, i, v)
		}
		if set.len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", step, set.len(), len(ref))
		}
		if len(ref) > 0 {
			for _, k := range []int{0, len(ref) / 2, len(ref) - 1, rng.IntN(len(ref))} {
				if got := set.kth(k); got != ref[k] {
					t.Fatalf("step %d: kth(%d) = %d, want %d", step, k, got, ref[k])
				}
			}
		}
	}
}
