// Package pathmodel is what path tracing knows of a session's flows: each
// flow's hop list and which hops answered its recent traces (State), the
// localisation of a loss to a link from those answers (Localise), and the
// fold of every traced flow onto the links of its path (Fold). It sends
// nothing: the prober's tracer feeds it.
package pathmodel

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/llama-exporter/llama_exporter/config"
)

// History is how many traces of each flow are remembered: one bit
// each in the masks of hopHist and flowPath, bit 0 the newest.
const History = 64

// Hop is what the recent traces of one flow saw at one hop (TTL).
type Hop struct {
	// Sent and Answered have bit i set when trace i (bit 0 the newest)
	// probed this hop / the hop answered it.
	Sent, Answered uint64
	Addr           netip.Addr // address of the hop's latest answer; invalid if none yet
	RTT            int64      // ns, RTT of that answer
}

// Answer is the answer to one hop probe of the trace in progress.
type Answer struct {
	Addr netip.Addr // the answering address: a router's, or the target's
	RTT  int64      // ns
	OK   bool       // answered in time
	Dest bool       // the answer came from the target (reflector or port unreachable)
}

// flowPath is one flow's path: the hop list and per-hop answers of its
// recent traces, and the trace in progress. Its memory is fixed.
type flowPath struct {
	hops          []Hop    // index i: TTL i+1
	cur           []Answer // the trace in progress
	traces, lossy uint64   // trace i exists / was taken while the flow lost probes
	episode       uint64   // trace i was taken in the flow's current loss episode
	lossSince     int64    // monotonic send time of the episode's first lost probe
	lastLost      int64    // monotonic send time of the latest lost probe
	lostAny       bool     // lastLost is valid
	done          uint64   // traces completed
	changes       uint64   // times the hop list changed
	dest          int      // TTL that reached the target in the latest trace that did; 0 unknown
	started       bool     // traced at least once (lastStart is valid)
	lastStart     int64    // monotonic ns
	running       bool
	pending       int  // hop probes of the trace in progress not yet settled
	lossRose      bool // trace at once: its loss rose from none
}

// State is a session's path tracing state (module option path_trace):
// one flowPath per flow. It has its own lock, never held while taking the
// session's.
type State struct {
	cfg config.PathTrace
	// SSID is the SSID of the session's trace probes, 16 bits: not the
	// session's, so that the reflector numbers them apart.
	SSID atomic.Uint32
	// Wake, when set, is told (without blocking) that a flow's loss rose
	// and, with on_loss, wants a trace at once.
	Wake chan<- struct{}
	// slack is a flow's probe period (ns): a trace started this long before
	// an episode's first lost probe was sent may already be in the loss.
	slack int64
	// hold is how long (ns) after sending a lost probe a flow counts as
	// losing: while the probe is in the window (timeout + window), and one
	// trace interval more, so that a moment without loss in the window of
	// a flow that keeps losing does not end its loss episode.
	hold int64

	mu       sync.Mutex
	flows    []flowPath
	sent     uint64 // trace probes sent
	answered uint64 // trace probes answered in time
}

// New returns the path state of a session of cfg, nil when the
// module does not trace.
func New(cfg *config.Module) *State {
	if cfg.PathTrace == nil {
		return nil
	}
	ps := &State{cfg: *cfg.PathTrace, flows: make([]flowPath, cfg.Flows), slack: int64(cfg.Interval) * int64(cfg.Flows),
		hold: int64(cfg.Timeout + cfg.Window + cfg.PathTrace.Interval)}
	for i := range ps.flows {
		ps.flows[i].hops = make([]Hop, cfg.PathTrace.MaxHops)
		ps.flows[i].cur = make([]Answer, cfg.PathTrace.MaxHops)
	}
	return ps
}

// Lost notes that flow lost a probe sent at monotonic time sent, as it
// enters the window. After a time without loss (hold) a loss episode
// begins, whose traces alone localise it, and with on_loss the flow is
// traced at once. Called with the session's lock held; it does not
// allocate.
func (ps *State) Lost(flow int, sent int64) {
	ps.mu.Lock()
	f := &ps.flows[flow]
	begins := !f.lostAny || sent-f.lastLost > ps.hold
	if begins {
		f.episode, f.lossSince = 0, sent
	}
	f.lostAny, f.lastLost = true, max(f.lastLost, sent)
	rose := begins && ps.cfg.OnLoss && !f.lossRose
	f.lossRose = f.lossRose || rose
	ps.mu.Unlock()
	if rose && ps.Wake != nil {
		select {
		case ps.Wake <- struct{}{}:
		default:
		}
	}
}

// Priority classes of flows for a trace, most urgent first.
const (
	ClassOnLoss = iota // its loss rose from none
	ClassDue           // its interval passed
	ClassNotDue
)

// lossyLocked reports whether f loses probes at monotonic time now: it
// lost one sent within hold. Called with ps.mu held.
func (ps *State) lossyLocked(f *flowPath, now int64) bool {
	return f.lostAny && now-f.lastLost <= ps.hold
}

// Candidate returns the flow of the session most due for a trace at
// monotonic time now, its class and its rank within the class (lower
// first). Among due flows the longest untraced goes first, a losing flow
// counting one interval longer: losing flows are traced about twice as
// often as the others when traces cannot keep up with every interval.
func (ps *State) Candidate(now int64) (flow, class int, rank int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	flow, class = -1, ClassNotDue
	for i := range ps.flows {
		f := &ps.flows[i]
		c, r := ClassNotDue, f.lastStart
		if ps.lossyLocked(f, now) {
			r -= int64(ps.cfg.Interval)
		}
		switch {
		case f.running:
		case f.lossRose:
			c = ClassOnLoss
		case !f.started || now-f.lastStart >= int64(ps.cfg.Interval):
			c = ClassDue
		}
		if c < class || c == class && c != ClassNotDue && r < rank {
			flow, class, rank = i, c, r
		}
	}
	return flow, class, rank
}

// Begin starts a trace of flow at monotonic time now and returns how many
// hop probes it sends: TTL 1 up to where the target answered last time, or
// up to max_hops.
func (ps *State) Begin(flow int, now int64) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	f := &ps.flows[flow]
	n := len(f.hops)
	if f.dest > 0 {
		n = min(f.dest, n)
	}
	clear(f.cur)
	f.running, f.lossRose, f.started, f.lastStart, f.pending = true, false, true, now, n
	ps.sent += uint64(n)
	return n
}

// Settle records the fate of the hop probe with TTL ttl of flow's trace
// in progress and reports whether that was its last one.
func (ps *State) Settle(flow, ttl int, a Answer) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	f := &ps.flows[flow]
	if !f.running {
		return false
	}
	if a.OK {
		f.cur[ttl-1] = a
		ps.answered++
	}
	f.pending--
	return f.pending <= 0
}

// Complete ends flow's trace in progress at monotonic time now, tagged
// with whether the flow loses probes then.
func (ps *State) Complete(flow int, now int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	f := &ps.flows[flow]
	if !f.running {
		return
	}
	lossy := ps.lossyLocked(f, now)
	f.running = false
	f.done++
	f.traces = f.traces<<1 | 1
	f.lossy <<= 1
	f.episode <<= 1
	if lossy {
		f.lossy |= 1
		if f.lastStart >= f.lossSince-ps.slack {
			f.episode |= 1
		}
	} else {
		f.episode = 0 // the loss ended
	}
	sent := len(f.hops)
	if f.dest > 0 {
		sent = min(f.dest, sent)
	}
	if f.record(sent) {
		f.changes++
	}
}

// record adds the trace in progress, which probed TTLs 1..sent, to the
// history and reports whether it changed the hop list: a hop that
// answered from another address, or the target reached at another TTL.
func (f *flowPath) record(sent int) bool {
	changed, dest, lastAnswer := false, 0, 0
	for i := range f.hops {
		h, a := &f.hops[i], &f.cur[i]
		h.Sent <<= 1
		h.Answered <<= 1
		if i >= sent {
			continue
		}
		h.Sent |= 1
		if !a.OK {
			continue
		}
		h.Answered |= 1
		lastAnswer = i + 1
		changed = changed || h.Addr.IsValid() && h.Addr != a.Addr
		h.Addr, h.RTT = a.Addr, a.RTT
		if a.Dest && dest == 0 {
			dest = i + 1
		}
	}
	switch {
	case dest > 0:
		changed = changed || f.dest > 0 && f.dest != dest
		f.dest = dest
	case lastAnswer == sent && sent > 0:
		f.dest = 0 // a router answered where the target used to: the path grew
	}
	return changed
}

// FlowView is a copy of one flow's path, for localisation and display.
type FlowView struct {
	Port                      uint16 // the flow's source port
	Lossy                     bool   // loses probes now (see State.hold)
	Lost, Decided             int    // probes lost / decided in the window
	ForwardLost, BackwardLost int    // of lost: lost forward / backward, where known
	Stateful                  bool   // the reflector counts what it receives: direction is known
	Hops                      []Hop  // index i: TTL i+1
	// Traces and LossyTraces have bit i set when trace i (bit 0 the
	// newest) exists / was taken while the flow lost probes.
	Traces, LossyTraces uint64
	episode             uint64 // traces of the current loss episode
	dest                int
	Done, Changes       uint64 // traces completed; times the hop list changed
	Running             bool   // a trace is in progress
	LastStart           int64  // monotonic ns when the latest trace started
}

// BackwardOnly reports whether all the flow's window loss is known to be
// on the way back: its replies' path, which its traces do not follow.
func (v *FlowView) BackwardOnly() bool {
	return v.BackwardLost > 0 && v.ForwardLost == 0 && v.Lost == v.BackwardLost
}

// forward reports whether some of the flow's window loss is known to be
// on the way out.
func (v *FlowView) forward() bool { return v.Stateful && v.ForwardLost > 0 }

// Length returns how many hops the flow's hop list has: up to the target
// when a trace reached it, else up to the farthest hop that answered in
// the remembered traces; 0 when none did.
func (v *FlowView) Length() int {
	if v.dest > 0 {
		return v.dest
	}
	for i := len(v.Hops) - 1; i >= 0; i-- {
		if v.Hops[i].Answered&v.Traces != 0 {
			return i + 1
		}
	}
	return 0
}

// Views copies the flows' paths at monotonic time now; ports are the
// flows' source ports, lost and decided their probes lost and decided in
// the window.
func (ps *State) Views(now int64, ports []uint16, lost, decided []int) []FlowView {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]FlowView, len(ps.flows))
	for i := range ps.flows {
		f := &ps.flows[i]
		out[i] = FlowView{Port: ports[i], Lossy: ps.lossyLocked(f, now), Lost: lost[i], Decided: decided[i], Hops: append([]Hop(nil), f.hops...),
			Traces: f.traces, LossyTraces: f.lossy, episode: f.episode, dest: f.dest, Done: f.done, Changes: f.changes,
			Running: f.running, LastStart: f.lastStart}
	}
	return out
}

// Counts returns the trace probes sent and answered in time.
func (ps *State) Counts() (sent, answered uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.sent, ps.answered
}
