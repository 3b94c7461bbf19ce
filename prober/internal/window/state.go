package window

import (
	"math"
	"math/bits"
	"slices"
)

// State summarises the decided probes in a session's window, kept up
// to date as probes enter it (once decided) and leave it, so that a scrape
// costs the same whatever the window length. Probes enter and leave in
// sequence order, each once: the work is amortised O(1) per probe, plus
// O(log n) for the sorted RTTs (rttSet).
//
// The window holds probes sent in [now - timeout - window, now - timeout).
type State struct {
	// Head is the sequence number of the next probe to enter, Tail of the
	// next to leave (Tail <= Head, in sequence order with wrap-around): the
	// window holds probes Tail..Head-1.
	Head, Tail uint32

	sent, lost         int
	forward, backward  int   // lost probes by known direction
	flowSent, flowLost []int // per flow, with flow_metrics or path_trace
	flowFwd, flowBwd   []int // per flow, lost probes by known direction
	rtts               rttSet
	sum                int64   // ns
	sumSq              uint128 // ns², exact: no drift over months of adds and removes
	jitterSum          int64   // ns, over consecutive answered probes
	jitterN            int
	Newest             uint32 // newest answered probe in the window
	HasNewest          bool
	LastReceivedSent   int64 // monotonic ns; for probe_success
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

// NewState returns an empty window of a session with flows flows;
// perFlow keeps per-flow counts too (flow_metrics or path_trace).
func NewState(flows int, perFlow bool) State {
	w := State{LastReceivedSent: math.MinInt64}
	if perFlow {
		w.flowSent, w.flowLost = make([]int, flows), make([]int, flows)
		w.flowFwd, w.flowBwd = make([]int, flows), make([]int, flows)
	}
	return w
}

// Enter adds decided probe sl to the window.
func (w *State) Enter(sl *Slot) {
	w.sent++
	if w.flowSent != nil {
		w.flowSent[sl.Flow]++
	}
	switch sl.State {
	case Lost:
		w.lost++
		if w.flowLost != nil {
			w.flowLost[sl.Flow]++
		}
		w.CountDirection(sl.Dir, int(sl.Flow), 1)
	case Received:
		w.rtts.insert(sl.RTT)
		w.sum += sl.RTT
		w.sumSq.add(square(sl.RTT))
		w.HasNewest, w.Newest = true, sl.Seq
	}
}

// IPDV adds (sign 1) or removes (sign -1) the delay variation between two
// consecutive answered probes of the window with RTTs prev and next (ns).
func (w *State) IPDV(prev, next int64, sign int) {
	d := next - prev
	if d < 0 {
		d = -d
	}
	w.jitterSum += int64(sign) * d
	w.jitterN += sign
}

// Leave removes probe sl from the window; next is the following answered
// probe still in the window, if any, whose IPDV pair with sl goes too.
func (w *State) Leave(sl *Slot, next *Slot) {
	w.sent--
	if w.flowSent != nil {
		w.flowSent[sl.Flow]--
	}
	switch sl.State {
	case Lost:
		w.lost--
		if w.flowLost != nil {
			w.flowLost[sl.Flow]--
		}
		w.CountDirection(sl.Dir, int(sl.Flow), -1)
	case Received:
		w.rtts.remove(sl.RTT)
		w.sum -= sl.RTT
		w.sumSq.sub(square(sl.RTT))
		if next != nil {
			w.IPDV(sl.RTT, next.RTT, -1)
		} else {
			w.HasNewest = false
		}
	}
}

// CountDirection adds n lost probes of flow, lost in direction d, to the
// window's directional counts.
func (w *State) CountDirection(d Direction, flow, n int) {
	switch d {
	case DirForward:
		w.forward += n
		if w.flowFwd != nil {
			w.flowFwd[flow] += n
		}
	case DirBackward:
		w.backward += n
		if w.flowBwd != nil {
			w.flowBwd[flow] += n
		}
	}
}

// Fill writes the window's summary into snap; the slices are copies.
func (w *State) Fill(snap *Summary) {
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
	snap.Quantiles = make(map[float64]float64, len(RTTQuantiles))
	if w.sent > 0 {
		snap.LossRatio = float64(w.lost) / float64(w.sent)
	}
	if w.jitterN > 0 {
		snap.Jitter = float64(w.jitterSum) / float64(w.jitterN) / 1e9
	}
	n := w.rtts.len()
	snap.RTTCount = n
	snap.RTTSum = float64(w.sum) / 1e9
	for _, q := range RTTQuantiles {
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
	for i, q := range RTTQuantiles {
		ranks[i+1] = min(max(int(math.Ceil(q*float64(n)))-1, 0), n-1)
	}
	w.rtts.kths(ranks[:], vals[:])
	snap.RTTMin, snap.RTTMax = float64(vals[0])/1e9, float64(vals[5])/1e9
	for i, q := range RTTQuantiles {
		snap.Quantiles[q] = float64(vals[i+1]) / 1e9
	}
}
