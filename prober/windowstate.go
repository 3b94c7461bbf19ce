package prober

import (
	"math"
	"math/bits"
	"slices"
)

// windowState summarises the decided probes in a session's window, kept up
// to date as probes enter it (once decided) and leave it, so that a scrape
// costs the same whatever the window length. Probes enter and leave in
// sequence order, each once: the work is amortised O(1) per probe, plus
// O(log n) for the sorted RTTs (rttSet).
//
// The window holds probes sent in [now - timeout - window, now - timeout).
type windowState struct {
	head, tail uint32 // next probe to enter; next probe to leave (tail <= head)

	sent, lost           int
	forward, backward    int   // lost probes by known direction
	flowSent, flowLost   []int // per flow, with flow_metrics or path_trace
	flowFwd, flowBwd     []int // per flow, lost probes by known direction
	rtts                 rttSet
	sum                  int64   // ns
	sumSq                uint128 // ns², exact: no drift over months of adds and removes
	jitterSum            int64   // ns, over consecutive answered probes
	jitterN              int
	newest               uint32 // newest answered probe in the window
	hasNewest            bool
	lastReceivedSentTime int64 // monotonic ns; for probe_success
}

// uint128 is an exact accumulator for sums of squared nanoseconds.
type uint128 struct{ hi, lo uint64 }

func (u *uint128) add(v uint128) {
	var c uint64
	u.lo, c = bits.Add64(u.lo, v.lo, 0)
	u.hi += v.hi + c
}

func (u *uint128) sub(v uint128) {
	var b uint64
	u.lo, b = bits.Sub64(u.lo, v.lo, 0)
	u.hi -= v.hi + b
}

func (u uint128) float() float64 { return float64(u.hi)*(1<<64) + float64(u.lo) }

// square returns ns² exactly (RTTs are never negative).
func square(ns int64) uint128 {
	hi, lo := bits.Mul64(uint64(ns), uint64(ns))
	return uint128{hi, lo}
}

func newWindowState(flows int, perFlow bool) windowState {
	w := windowState{lastReceivedSentTime: math.MinInt64}
	if perFlow {
		w.flowSent, w.flowLost = make([]int, flows), make([]int, flows)
		w.flowFwd, w.flowBwd = make([]int, flows), make([]int, flows)
	}
	return w
}

// enter adds decided probe sl to the window.
func (w *windowState) enter(sl *slot) {
	w.sent++
	if w.flowSent != nil {
		w.flowSent[sl.flow]++
	}
	switch sl.state {
	case stateLost:
		w.lost++
		if w.flowLost != nil {
			w.flowLost[sl.flow]++
		}
		w.countDirection(sl.dir, int(sl.flow), 1)
	case stateReceived:
		w.rtts.insert(sl.rtt)
		w.sum += sl.rtt
		w.sumSq.add(square(sl.rtt))
		w.hasNewest, w.newest = true, sl.seq
	}
}

// ipdv adds (sign 1) or removes (sign -1) the delay variation between two
// consecutive answered probes of the window with RTTs prev and next (ns).
func (w *windowState) ipdv(prev, next int64, sign int) {
	d := next - prev
	if d < 0 {
		d = -d
	}
	w.jitterSum += int64(sign) * d
	w.jitterN += sign
}

// leave removes probe sl from the window; next is the following answered
// probe still in the window, if any, whose IPDV pair with sl goes too.
func (w *windowState) leave(sl *slot, next *slot) {
	w.sent--
	if w.flowSent != nil {
		w.flowSent[sl.flow]--
	}
	switch sl.state {
	case stateLost:
		w.lost--
		if w.flowLost != nil {
			w.flowLost[sl.flow]--
		}
		w.countDirection(sl.dir, int(sl.flow), -1)
	case stateReceived:
		w.rtts.remove(sl.rtt)
		w.sum -= sl.rtt
		w.sumSq.sub(square(sl.rtt))
		if next != nil {
			w.ipdv(sl.rtt, next.rtt, -1)
		} else {
			w.hasNewest = false
		}
	}
}

// countDirection adds n lost probes of flow, lost in direction d, to the
// window's directional counts.
func (w *windowState) countDirection(d lossDirection, flow, n int) {
	switch d {
	case dirForward:
		w.forward += n
		if w.flowFwd != nil {
			w.flowFwd[flow] += n
		}
	case dirBackward:
		w.backward += n
		if w.flowBwd != nil {
			w.flowBwd[flow] += n
		}
	}
}

// fill writes the window's summary into snap.
func (w *windowState) fill(snap *Snapshot) {
	snap.WindowSent, snap.WindowLost = w.sent, w.lost
	snap.WindowForwardLost, snap.WindowBackwardLost = w.forward, w.backward
	if w.flowSent != nil {
		snap.FlowWindowSent = slices.Clone(w.flowSent)
		snap.FlowWindowLost = slices.Clone(w.flowLost)
		snap.FlowWindowForwardLost = slices.Clone(w.flowFwd)
		snap.FlowWindowBackwardLost = slices.Clone(w.flowBwd)
	}
	snap.LossRatio, snap.RTTMin, snap.RTTMax = math.NaN(), math.NaN(), math.NaN()
	snap.RTTStdDev, snap.Jitter = math.NaN(), math.NaN()
	snap.Quantiles = make(map[float64]float64, len(WindowQuantiles))
	if w.sent > 0 {
		snap.LossRatio = float64(w.lost) / float64(w.sent)
	}
	if w.jitterN > 0 {
		snap.Jitter = float64(w.jitterSum) / float64(w.jitterN) / 1e9
	}
	n := w.rtts.len()
	snap.RTTCount = n
	snap.RTTSum = float64(w.sum) / 1e9
	for _, q := range WindowQuantiles {
		snap.Quantiles[q] = math.NaN()
	}
	if n == 0 {
		return
	}
	mean := float64(w.sum) / float64(n)
	variance := max(w.sumSq.float()/float64(n)-mean*mean, 0)
	snap.RTTStdDev = math.Sqrt(variance) / 1e9
	// Minimum, the quantiles by nearest rank, maximum: ascending ranks,
	// read in one pass.
	var ranks [6]int
	var vals [6]int64
	ranks[0], ranks[5] = 0, n-1
	for i, q := range WindowQuantiles {
		ranks[i+1] = min(max(int(math.Ceil(q*float64(n)))-1, 0), n-1)
	}
	w.rtts.kths(ranks[:], vals[:])
	snap.RTTMin, snap.RTTMax = float64(vals[0])/1e9, float64(vals[5])/1e9
	for i, q := range WindowQuantiles {
		snap.Quantiles[q] = float64(vals[i+1]) / 1e9
	}
}
