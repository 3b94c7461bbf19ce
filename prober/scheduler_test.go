package prober

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSessionHeapOrder pushes random due times, moves the first entry later
// a number of times (as a round does) and checks that the first entry is
// always the earliest and that pops come out in order.
func TestSessionHeapOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h sessionHeap
	var want []int64
	for range 1000 {
		d := rng.Int64N(1e6)
		h.push(heapEntry{due: d})
		want = append(want, d)
	}
	for range 3000 {
		old := h[0].due
		if m := slices.Min(want); old != m {
			t.Fatalf("first entry due %d, earliest is %d", old, m)
		}
		next := old + rng.Int64N(1e6)
		h[0].due = next
		h.down(0)
		want[slices.Index(want, old)] = next
	}
	slices.Sort(want)
	var got []int64
	for len(h) > 0 {
		got = append(got, h[0].due)
		h.pop()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pops out of order or lost: got %d entries, want %d", len(got), len(want))
	}
}
