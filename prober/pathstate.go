package prober

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/llama-exporter/llama_exporter/config"
)

// traceHistory is how many traces of each flow are remembered: one bit
// each in the masks of hopHist and flowPath, bit 0 the newest.
const traceHistory = 64

// hopHist is what the recent traces of one flow saw at one hop (TTL).
type hopHist struct {
	sent, ans uint64     // trace i probed this hop / the hop answered it
	addr      netip.Addr // address of the hop's latest answer; invalid if none yet
	rtt       int64      // ns, RTT of that answer
}

// hopAnswer is the answer to one hop probe of the trace in progress.
type hopAnswer struct {
	addr netip.Addr
	rtt  int64 // ns
	ok   bool  // answered in time
	dest bool  // the answer came from the target (reflector or port unreachable)
}

// flowPath is one flow's path: the hop list and per-hop answers of its
// recent traces, and the trace in progress. Its memory is fixed.
type flowPath struct {
	hops          []hopHist   // index i: TTL i+1
	cur           []hopAnswer // the trace in progress
	traces, lossy uint64      // trace i exists / was taken while the flow lost probes
	episode       uint64      // trace i was taken in the flow's current loss episode
	lossSince     int64       // monotonic send time of the episode's first lost probe
	lastLost      int64       // monotonic send time of the latest lost probe
	lostAny       bool        // lastLost is valid
	done          uint64      // traces completed
	changes       uint64      // times the hop list changed
	dest          int         // TTL that reached the target in the latest trace that did; 0 unknown
	started       bool        // traced at least once (lastStart is valid)
	lastStart     int64       // monotonic ns
	running       bool
	pending       int  // hop probes of the trace in progress not yet settled
	lossRose      bool // trace at once: its loss rose from none
}

// pathState is a session's path tracing state (module option path_trace):
// one flowPath per flow. It has its own lock, never held while taking the
// session's.
type pathState struct {
	cfg  config.PathTrace
	ssid atomic.Uint32 // SSID of trace probes: not the session's, so that the reflector numbers them apart
	wake chan<- struct{}
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

// newPathState returns the path state of a session of cfg, nil when the
// module does not trace.
func newPathState(cfg *config.Module) *pathState {
	if cfg.PathTrace == nil {
		return nil
	}
	ps := &pathState{cfg: *cfg.PathTrace, flows: make([]flowPath, cfg.Flows), slack: int64(cfg.Interval) * int64(cfg.Flows),
		hold: int64(cfg.Timeout + cfg.Window + cfg.PathTrace.Interval)}
	for i := range ps.flows {
		ps.flows[i].hops = make([]hopHist, cfg.PathTrace.MaxHops)
		ps.flows[i].cur = make([]hopAnswer, cfg.PathTrace.MaxHops)
	}
	return ps
}

// lost notes that flow lost a probe sent at monotonic time sent, as it
// enters the window. After a time without loss (hold) a loss episode
// begins, whose traces alone localise it, and with on_loss the flow is
// traced at once. Called with the session's lock held; it does not
// allocate.
func (ps *pathState) lost(flow int, sent int64) {
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
	if rose && ps.wake != nil {
		select {
		case ps.wake <- struct{}{}:
		default:
		}
	}
}

// Priority classes of flows for a trace, most urgent first.
const (
	traceOnLoss = iota // its loss rose from none
	traceDue           // its interval passed
	traceNotDue
)

// lossyLocked reports whether f loses probes at monotonic time now: it
// lost one sent within hold. Called with ps.mu held.
func (ps *pathState) lossyLocked(f *flowPath, now int64) bool {
	return f.lostAny && now-f.lastLost <= ps.hold
}

// candidate returns the flow of the session most due for a trace at
// monotonic time now, its class and its rank within the class (lower
// first). Among due flows the longest untraced goes first, a losing flow
// counting one interval longer: losing flows are traced about twice as
// often as the others when traces cannot keep up with every interval.
func (ps *pathState) candidate(now int64) (flow, class int, rank int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	flow, class = -1, traceNotDue
	for i := range ps.flows {
		f := &ps.flows[i]
		c, r := traceNotDue, f.lastStart
		if ps.lossyLocked(f, now) {
			r -= int64(ps.cfg.Interval)
		}
		switch {
		case f.running:
		case f.lossRose:
			c = traceOnLoss
		case !f.started || now-f.lastStart >= int64(ps.cfg.Interval):
			c = traceDue
		}
		if c < class || c == class && c != traceNotDue && r < rank {
			flow, class, rank = i, c, r
		}
	}
	return flow, class, rank
}

// begin starts a trace of flow at monotonic time now and returns how many
// hop probes it sends: TTL 1 up to where the target answered last time, or
// up to max_hops.
func (ps *pathState) begin(flow int, now int64) int {
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

// settle records the fate of the hop probe with TTL ttl of flow's trace
// in progress and reports whether that was its last one.
func (ps *pathState) settle(flow, ttl int, a hopAnswer) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	f := &ps.flows[flow]
	if !f.running {
		return false
	}
	if a.ok {
		f.cur[ttl-1] = a
		ps.answered++
	}
	f.pending--
	return f.pending <= 0
}

// complete ends flow's trace in progress at monotonic time now, tagged
// with whether the flow loses probes then.
func (ps *pathState) complete(flow int, now int64) {
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
		h.sent <<= 1
		h.ans <<= 1
		if i >= sent {
			continue
		}
		h.sent |= 1
		if !a.ok {
			continue
		}
		h.ans |= 1
		lastAnswer = i + 1
		changed = changed || h.addr.IsValid() && h.addr != a.addr
		h.addr, h.rtt = a.addr, a.rtt
		if a.dest && dest == 0 {
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

// flowView is a copy of one flow's path, for localisation and display.
type flowView struct {
	port                uint16
	lossy               bool // loses probes now (see pathState.hold)
	lost, decided       int  // probes lost / decided in the window
	fwd, bwd            int  // of lost: lost forward / backward, where known
	stateful            bool // the reflector counts what it receives: direction is known
	hops                []hopHist
	traces, lossyTraces uint64
	episode             uint64 // traces of the current loss episode
	dest                int
	done, changes       uint64
	running             bool
	lastStart           int64
}

// backwardOnly reports whether all the flow's window loss is known to be
// on the way back: its replies' path, which its traces do not follow.
func (v *flowView) backwardOnly() bool {
	return v.bwd > 0 && v.fwd == 0 && v.lost == v.bwd
}

// forward reports whether some of the flow's window loss is known to be
// on the way out.
func (v *flowView) forward() bool { return v.stateful && v.fwd > 0 }

// length returns how many hops the flow's hop list has: up to the target
// when a trace reached it, else up to the farthest hop that answered in
// the remembered traces; 0 when none did.
func (v *flowView) length() int {
	if v.dest > 0 {
		return v.dest
	}
	for i := len(v.hops) - 1; i >= 0; i-- {
		if v.hops[i].ans&v.traces != 0 {
			return i + 1
		}
	}
	return 0
}

// views copies the flows' paths at monotonic time now; ports are the
// flows' source ports, lost and decided their probes lost and decided in
// the window.
func (ps *pathState) views(now int64, ports []uint16, lost, decided []int) []flowView {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]flowView, len(ps.flows))
	for i := range ps.flows {
		f := &ps.flows[i]
		out[i] = flowView{port: ports[i], lossy: ps.lossyLocked(f, now), lost: lost[i], decided: decided[i], hops: append([]hopHist(nil), f.hops...),
			traces: f.traces, lossyTraces: f.lossy, episode: f.episode, dest: f.dest, done: f.done, changes: f.changes,
			running: f.running, lastStart: f.lastStart}
	}
	return out
}

// counts returns the trace probes sent and answered in time.
func (ps *pathState) counts() (sent, answered uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.sent, ps.answered
}
