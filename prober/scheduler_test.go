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

func TestArrival(t *testing.T) {
	const t4, wall = int64(50e9), int64(1_700_000_000e9)
	for _, tc := range []struct {
		name     string
		rxKernel int64
		want     int64
	}{
		{"no kernel timestamp", 0, t4},
		{"waited 3 ms", wall - 3e6, t4 - 3e6},
		{"kernel time after the read: the wall clock stepped back", wall + 1e6, t4},
		{"waited over maxReadDelay: the wall clock stepped forward", wall - int64(maxReadDelay), t4},
	} {
		if got := arrival(t4, wall, tc.rxKernel); got != tc.want {
			t.Errorf("%s: arrival %d, want %d", tc.name, got, tc.want)
		}
	}
}
