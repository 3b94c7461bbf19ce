package prober

import (
	"math"
	"net/netip"
	"slices"
)

// WindowQuantiles are the RTT quantiles served in
// llama_probe_window_rtt_seconds.
var WindowQuantiles = []float64{0.5, 0.9, 0.99, 0.999}

// Snapshot is a session's state at one instant: cumulative counters and the
// summary of the window of decided probes.
type Snapshot struct {
	Counters
	Dst netip.AddrPort // target address probed
	Src netip.Addr     // local address probes leave from
	// InFlight counts probes sent but not yet decided: Sent = Received +
	// Lost + InFlight.
	InFlight int
	// Stateful is true once the reflector showed per-session sequence
	// numbers, which make directional loss known.
	Stateful bool
	// Hops is the last forward hop count; -1 when unknown.
	Hops int
	// KernelTimestamps is true when the last answered probe was timed by
	// the kernel.
	KernelTimestamps bool
	// FlowSent and FlowLost are cumulative per-flow counts (flow_metrics).
	FlowSent, FlowLost []uint64
	// FlowWindowSent and FlowWindowLost are per-flow window counts
	// (flow_metrics).
	FlowWindowSent, FlowWindowLost []int

	// Success is true if any probe sent in the last window + timeout was
	// answered in time: a young session with its first reply is up even
	// though that probe is not in the window yet.
	Success bool
	// Window is the span in seconds that the window really covers: short
	// for a new session, 0 before any probe is decided.
	Window float64
	// WindowSent and WindowLost count decided probes sent in
	// [now - timeout - window, now - timeout].
	WindowSent, WindowLost int
	// WindowForwardLost and WindowBackwardLost split WindowLost by
	// direction where a stateful reflector made it known.
	WindowForwardLost, WindowBackwardLost int
	// LossRatio is WindowLost / WindowSent, NaN when WindowSent is 0.
	LossRatio float64
	// RTT statistics over the window's answered probes, in seconds; NaN
	// when there are none (RTTCount 0).
	RTTCount               int
	RTTSum, RTTMin, RTTMax float64
	RTTStdDev, Jitter      float64
	Quantiles              map[float64]float64
}

// summarize computes the window summary over a session's ring. next is the
// next sequence number; times are monotonic ns. A probe counts only once its
// fate is decided: the window covers probes sent in
// [now - timeout - window, now - timeout], so in-flight probes are never
// counted as lost (DESIGN §5).
func summarize(slots []slot, next uint32, now, timeout, window, firstSent int64, flows int, perFlow bool) Snapshot {
	end := now - timeout
	start := end - window
	snap := Snapshot{LossRatio: math.NaN(), RTTMin: math.NaN(), RTTMax: math.NaN(),
		RTTStdDev: math.NaN(), Jitter: math.NaN(), Quantiles: make(map[float64]float64, len(WindowQuantiles))}
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
		if sl.seq != seq || sl.state == stateEmpty {
			continue
		}
		if sl.state == stateReceived && sl.sent >= start {
			snap.Success = true
		}
		if sl.state == statePending {
			snap.InFlight++
			continue
		}
		if sl.sent < start || sl.sent > end {
			continue
		}
		snap.WindowSent++
		if perFlow {
			snap.FlowWindowSent[sl.flow]++
		}
		if sl.state == stateLost {
			snap.WindowLost++
			if perFlow {
				snap.FlowWindowLost[sl.flow]++
			}
			switch sl.dir {
			case dirForward:
				snap.WindowForwardLost++
			case dirBackward:
				snap.WindowBackwardLost++
			}
			continue
		}
		r := float64(sl.rtt) / 1e9
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
		for _, q := range WindowQuantiles {
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
	for _, q := range WindowQuantiles {
		snap.Quantiles[q] = quantile(rtts, q)
	}
	return snap
}

// quantile returns the nearest-rank q-quantile of sorted values.
func quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
