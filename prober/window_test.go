package prober

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"net/netip"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/prober/internal/window"
)

// summarizeSlow computes the window summary by walking the whole ring: the
// reference that the incremental windowState is checked against. next is the
// next sequence number; times are monotonic ns. A probe counts only once its
// fate is decided: the window covers probes sent in
// [now - timeout - window, now - timeout], so in-flight probes are never
// counted as lost.
func summarizeSlow(slots []window.Slot, next uint32, now, timeout, span, firstSent int64, flows int, perFlow bool) Snapshot {
	end := now - timeout
	start := end - span
	snap := Snapshot{Summary: window.Summary{LossRatio: math.NaN(), RTTMin: math.NaN(), RTTMax: math.NaN(),
		RTTStdDev: math.NaN(), Jitter: math.NaN(), Quantiles: make(map[float64]float64, len(window.RTTQuantiles))}}
	if perFlow {
		snap.FlowWindowSent, snap.FlowWindowLost = make([]int, flows), make([]int, flows)
	}
	if firstSent >= 0 && firstSent <= end {
		snap.Window = float64(end-max(start, firstSent)) / 1e9
	}
	n := uint32(len(slots))
	first := uint32(0)
	if next > n {
		first = next - n
	}
	rtts := make([]float64, 0, next-first)
	var jitterSum float64
	var jitterN int
	prev := math.NaN()
	for seq := first; seq != next; seq++ {
		sl := &slots[seq%n]
		if sl.Seq != seq || sl.State == window.Empty {
			continue
		}
		if sl.State == window.Received && sl.Sent >= start {
			snap.Success = true
		}
		if sl.State == window.Pending {
			snap.InFlight++
			continue
		}
		if sl.Sent < start || sl.Sent >= end {
			continue
		}
		snap.WindowSent++
		if perFlow {
			snap.FlowWindowSent[sl.Flow]++
		}
		if sl.State == window.Lost {
			snap.WindowLost++
			if perFlow {
				snap.FlowWindowLost[sl.Flow]++
			}
			switch sl.Dir {
			case window.DirForward:
				snap.WindowForwardLost++
			case window.DirBackward:
				snap.WindowBackwardLost++
			}
			continue
		}
		r := float64(sl.RTT) / 1e9
		rtts = append(rtts, r)
		// IPDV between consecutive answered probes (RFC 3393).
		if !math.IsNaN(prev) {
			jitterSum += math.Abs(r - prev)
			jitterN++
		}
		prev = r
	}
	if snap.WindowSent > 0 {
		snap.LossRatio = float64(snap.WindowLost) / float64(snap.WindowSent)
	}
	if jitterN > 0 {
		snap.Jitter = jitterSum / float64(jitterN)
	}
	snap.RTTCount = len(rtts)
	if len(rtts) == 0 {
		for _, q := range window.RTTQuantiles {
			snap.Quantiles[q] = math.NaN()
		}
		return snap
	}
	for _, r := range rtts {
		snap.RTTSum += r
	}
	mean := snap.RTTSum / float64(len(rtts))
	var sq float64
	for _, r := range rtts {
		sq += (r - mean) * (r - mean)
	}
	snap.RTTStdDev = math.Sqrt(sq / float64(len(rtts)))
	slices.Sort(rtts)
	snap.RTTMin, snap.RTTMax = rtts[0], rtts[len(rtts)-1]
	for _, q := range window.RTTQuantiles {
		snap.Quantiles[q] = quantile(rtts, q)
	}
	return snap
}

// quantile returns the nearest-rank q-quantile of sorted values.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// TestIncrementalWindowMatchesFullScan drives sessions with random sends,
// replies, losses, duplicates and late replies, and after every step checks
// that the incrementally kept window equals a full scan of the ring.
func TestIncrementalWindowMatchesFullScan(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		m := config.DefaultModule()
		m.Interval = time.Duration(1+rng.IntN(20)) * time.Millisecond
		m.Timeout = time.Duration(1+rng.IntN(50)) * m.Interval
		m.Window = time.Duration(1+rng.IntN(100)) * m.Interval
		m.Flows, m.FlowMetrics = 1+rng.IntN(8), true
		s := newSession("x", &m, resolvedTarget{name: "t", host: "t", port: 1, dst: netip.MustParseAddrPort("198.18.0.2:862")}, 0)
		now := int64(0)
		for step := range 3000 {
			now += int64(m.Interval) + rng.Int64N(int64(m.Interval)/4+1)
			seq, _, _ := s.recordSend(now)
			// Answer some recent probe, possibly late, twice, or never.
			if rng.IntN(10) < 8 {
				back := uint32(rng.IntN(5))
				if back <= seq {
					rtt := rng.Int64N(int64(m.Timeout) * 5 / 4)
					s.onReply(&timedReply{seq: seq - back, reflSeq: seq - back, t4: now + rtt - int64(back)*int64(m.Interval), senderTTL: -1, dscp: -1, dscp2: -1})
				}
			}
			got := s.snapshot(now)
			s.mu.Lock()
			want := summarizeSlow(s.slots, s.next, now, s.timeout, s.window, s.firstSent, m.Flows, true)
			s.mu.Unlock()
			same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) < 1e-12 }
			ok := got.WindowSent == want.WindowSent && got.WindowLost == want.WindowLost &&
				got.RTTCount == want.RTTCount && same(got.LossRatio, want.LossRatio) &&
				same(got.RTTMin, want.RTTMin) && same(got.RTTMax, want.RTTMax) && same(got.RTTSum, want.RTTSum) &&
				same(got.Jitter, want.Jitter) && math.Abs(got.RTTStdDev-want.RTTStdDev) < 1e-9 || math.IsNaN(got.RTTStdDev) && math.IsNaN(want.RTTStdDev)
			for _, q := range window.RTTQuantiles {
				ok = ok && same(got.Quantiles[q], want.Quantiles[q])
			}
			ok = ok && slices.Equal(got.FlowWindowSent, want.FlowWindowSent) && slices.Equal(got.FlowWindowLost, want.FlowWindowLost)
			ok = ok && got.Success == want.Success && got.InFlight == want.InFlight
			if !ok {
				t.Fatalf("seed %d step %d: incremental\n%+v\nfull scan\n%+v", seed, step, got, want)
			}
		}
	}
}
