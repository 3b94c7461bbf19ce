package pathmodel

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
)

var (
	traceSrc = netip.MustParseAddr("198.18.20.1")
	hopA     = netip.MustParseAddr("198.18.1.2") // R2a
	hopB     = netip.MustParseAddr("198.18.2.2") // R2b
	hopC     = netip.MustParseAddr("198.18.4.2") // R3, seen via R2b
	hopC2    = netip.MustParseAddr("198.18.3.2") // R3, seen via R2a
	hopD     = netip.MustParseAddr("198.18.10.1")
)

// synthFlow builds a flow's history from traces, oldest first: per trace,
// whether the flow was losing probes and which hops (TTL 1..len(addrs))
// answered.
type synthTrace struct {
	lossy bool
	ans   []bool
}

func synthFlow(port uint16, lossyNow bool, addrs []netip.Addr, traces []synthTrace) FlowView {
	f := flowPath{hops: make([]Hop, 16), cur: make([]Answer, 16), dest: len(addrs)}
	for _, tr := range traces {
		f.running = true
		clear(f.cur)
		for i, ok := range tr.ans {
			if ok {
				f.cur[i] = Answer{Addr: addrs[i], OK: true, Dest: i == len(addrs)-1}
			}
		}
		f.traces = f.traces<<1 | 1
		f.lossy <<= 1
		f.episode <<= 1
		if tr.lossy {
			f.lossy |= 1
			f.episode |= 1
		} else {
			f.episode = 0
		}
		f.record(len(addrs))
	}
	// A trace that never reached the target leaves the hop list at its
	// last known addresses.
	for i, a := range addrs {
		if !f.hops[i].Addr.IsValid() {
			f.hops[i].Addr = a
		}
	}
	v := FlowView{Port: port, Hops: f.hops, Traces: f.traces, LossyTraces: f.lossy, episode: f.episode, dest: f.dest, Decided: 1000}
	if lossyNow {
		v.Lossy, v.Lost = true, 1000
	}
	return v
}

func repeat(n int, tr synthTrace) []synthTrace { return slices.Repeat([]synthTrace{tr}, n) }

var (
	all3     = []bool{true, true, true}
	firstOne = []bool{true, false, false}
	viaA     = []netip.Addr{hopA, hopC2, hopD}
	viaB     = []netip.Addr{hopB, hopC, hopD}
)

func wantLinks(t *testing.T, got []SuspectLink, want ...SuspectLink) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("suspect links %v, want %v", got, want)
	}
	for i := range got {
		if got[i].From != want[i].From || got[i].To != want[i].To || !slices.Equal(got[i].Flows, want[i].Flows) {
			t.Fatalf("suspect links %v, want %v", got, want)
		}
	}
}

// A black hole after R2b: one trace of each lossy flow, answered by R2b
// only, names R2b -> R3; the flows via R2a are not named.
func TestPathTraceLocaliseBlackHole(t *testing.T) {
	healthy := repeat(3, synthTrace{ans: all3})
	flows := []FlowView{
		synthFlow(40000, true, viaB, append(healthy, synthTrace{lossy: true, ans: firstOne})),
		synthFlow(40001, false, viaA, healthy),
		synthFlow(40002, true, viaB, healthy), // lossy, not traced since: named with its path
		synthFlow(40003, false, viaA, healthy),
	}
	wantLinks(t, Localise(traceSrc, flows), SuspectLink{From: hopB, To: hopC, Flows: []uint16{40000, 40002}})
	// R2b missing an answer (its ICMP lost, or rate-limited) does not move
	// the blame to the link before it: answers that stop after R2b are
	// likelier than answers thinning out from R2b on.
	flows[0] = synthFlow(40000, true, viaB, append(healthy, synthTrace{lossy: true, ans: firstOne},
		synthTrace{lossy: true, ans: []bool{false, false, false}}, synthTrace{lossy: true, ans: firstOne}))
	wantLinks(t, Localise(traceSrc, flows), SuspectLink{From: hopB, To: hopC, Flows: []uint16{40000, 40002}})
	// The loss clears: nothing is suspected, whatever the history says.
	flows[0].Lossy, flows[2].Lossy = false, false
	wantLinks(t, Localise(traceSrc, flows))
}

// Under partial loss before R3, the target's two trace probes both lost
// (one chance in a hundred at 10 %) while R3 answered do not name R3 -> D:
// a stop at a single far hop takes stopFloor unanswered probes.
func TestPathTraceLocaliseTwoLostProbesAreNoStop(t *testing.T) {
	healthy := repeat(3, synthTrace{ans: all3})
	r3Only := []bool{true, true, false}
	flows := []FlowView{
		synthFlow(40000, true, viaB, append(slices.Clone(healthy), synthTrace{lossy: true, ans: r3Only})),
		synthFlow(40002, true, viaB, append(slices.Clone(healthy), synthTrace{lossy: true, ans: r3Only})),
		synthFlow(40001, false, viaA, healthy),
	}
	wantLinks(t, Localise(traceSrc, flows))
	flows[0] = synthFlow(40000, true, viaB, append(slices.Clone(healthy), repeat(2, synthTrace{lossy: true, ans: r3Only})...))
	wantLinks(t, Localise(traceSrc, flows), SuspectLink{From: hopC, To: hopD, Flows: []uint16{40000, 40002}})
}

// A pair blames only what its traces follow, the probes' path: flows whose
// loss the stateful reflector counted on the way back name no link, and a
// suspect says whether its loss is known to be forward.
func TestPathTraceLocaliseForwardOnly(t *testing.T) {
	healthy := repeat(3, synthTrace{ans: all3})
	lossy := func(port uint16, fwd, bwd int, stateful bool) FlowView {
		v := synthFlow(port, true, viaB, append(slices.Clone(healthy), repeat(2, synthTrace{lossy: true, ans: firstOne})...))
		v.Lost, v.ForwardLost, v.BackwardLost, v.Stateful = fwd+bwd, fwd, bwd, stateful
		return v
	}
	ok := synthFlow(40001, false, viaA, healthy)
	for _, tc := range []struct {
		name  string
		flows []FlowView
		want  []SuspectLink
	}{
		{"replies lost", []FlowView{lossy(40000, 0, 5, true), ok}, nil},
		{"probes lost", []FlowView{lossy(40000, 5, 0, true), ok},
			[]SuspectLink{{From: hopB, To: hopC, Flows: []uint16{40000}, Direction: DirectionForward}}},
		{"stateless reflector", []FlowView{lossy(40000, 0, 0, false), ok},
			[]SuspectLink{{From: hopB, To: hopC, Flows: []uint16{40000}, Direction: DirectionUnknown}}},
		{"every probe lost, direction not counted", []FlowView{lossy(40000, 0, 0, true), ok},
			[]SuspectLink{{From: hopB, To: hopC, Flows: []uint16{40000}, Direction: DirectionUnknown}}},
	} {
		got := Localise(traceSrc, tc.flows)
		if len(got) != len(tc.want) || len(got) == 1 && (got[0].Direction != tc.want[0].Direction || got[0].To != tc.want[0].To) {
			t.Errorf("%s: suspect links %v (direction %v), want %v", tc.name, got, got, tc.want)
		}
	}
}

// Without healthy evidence that the far side answers, nothing is named:
// the silence could be a router that never answers.
func TestPathTraceLocaliseNeedsHealthyEvidence(t *testing.T) {
	flows := []FlowView{
		synthFlow(40000, true, viaB, repeat(3, synthTrace{lossy: true, ans: firstOne})),
		synthFlow(40001, true, viaB, repeat(3, synthTrace{lossy: true, ans: firstOne})),
	}
	wantLinks(t, Localise(traceSrc, flows))
}

// A hop that alone does not answer while later hops do is never blamed,
// whether or not the flow loses probes.
func TestPathTraceLocaliseSilentHopNeverBlamed(t *testing.T) {
	silentFirst := []bool{false, true, true}
	flows := []FlowView{
		synthFlow(40000, true, viaA, append(repeat(5, synthTrace{ans: silentFirst}), repeat(10, synthTrace{lossy: true, ans: silentFirst})...)),
		synthFlow(40001, false, viaA, repeat(5, synthTrace{ans: silentFirst})),
	}
	wantLinks(t, Localise(traceSrc, flows))
}

// Partial loss on R2b -> R3: trace probes beyond R2b are lost at the
// flows' rate. The link is named once R2b's answers make it unlikely that
// R2b lies beyond the loss, and over many random runs the wrong link is
// named rarely (at most about blameAlpha of the runs, by construction).
func TestPathTraceLocalisePartialLoss(t *testing.T) {
	const runs, loss = 400, 0.10
	rng := rand.New(rand.NewPCG(1, 2))
	named, wrong, tracesToName := 0, 0, 0
	for range runs {
		var b1, b2 []synthTrace
		healthy := repeat(3, synthTrace{ans: all3})
		for n := 1; n <= History-3; n++ {
			for _, b := range []*[]synthTrace{&b1, &b2} {
				*b = append(*b, synthTrace{lossy: true, ans: []bool{true, rng.Float64() >= loss, rng.Float64() >= loss}})
			}
			flows := []FlowView{
				synthFlow(1, true, viaB, append(slices.Clone(healthy), b1...)),
				synthFlow(2, true, viaB, append(slices.Clone(healthy), b2...)),
				synthFlow(3, false, viaA, healthy),
			}
			flows[0].Lost, flows[1].Lost = 100, 100 // 10% of the flows' probes
			links := Localise(traceSrc, flows)
			if len(links) == 0 {
				continue
			}
			if links[0].From != hopB || links[0].To != hopC {
				wrong++
			}
			named++
			tracesToName += n
			break
		}
	}
	t.Logf("10%% loss: named in %d of %d runs after %.1f traces per flow on average; wrong link in %d", named, runs, float64(tracesToName)/float64(max(named, 1)), wrong)
	if named < runs*9/10 {
		t.Errorf("named in only %d of %d runs", named, runs)
	}
	if wrong > runs*3/100 {
		t.Errorf("wrong link named in %d of %d runs", wrong, runs)
	}
}

func TestPathTraceBinomialTail(t *testing.T) {
	for _, tc := range []struct {
		k, n    int
		p, want float64
	}{
		{0, 5, 0.5, 1}, {6, 5, 0.5, 0}, {3, 3, 0, 0}, {3, 3, 1, 1},
		{3, 3, 0.5, 0.125}, {1, 2, 0.5, 0.75}, {44, 44, 0.9, math.Pow(0.9, 44)},
	} {
		if got := binomialTail(tc.k, tc.n, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("binomialTail(%d, %d, %v) = %v, want %v", tc.k, tc.n, tc.p, got, tc.want)
		}
	}
}

// The hop list changes when a hop answers from another address or the
// target at another TTL; silence is no change.
func TestPathTraceHopListChanges(t *testing.T) {
	f := flowPath{hops: make([]Hop, 4), cur: make([]Answer, 4)}
	trace := func(addrs ...netip.Addr) bool {
		clear(f.cur)
		for i, a := range addrs {
			if a.IsValid() {
				f.cur[i] = Answer{Addr: a, OK: true, Dest: a == hopD}
			}
		}
		sent := len(f.hops)
		if f.dest > 0 {
			sent = f.dest
		}
		return f.record(sent)
	}
	for i, tc := range []struct {
		addrs   []netip.Addr
		changed bool
		dest    int
	}{
		{[]netip.Addr{hopA, hopC2, hopD, hopD}, false, 3},
		{[]netip.Addr{hopA, {}, {}}, false, 3},
		{[]netip.Addr{hopB, hopC, hopD}, true, 3},
		{[]netip.Addr{hopB, hopD}, true, 2},
		{[]netip.Addr{hopB, hopC}, true, 0},
	} {
		if got := trace(tc.addrs...); got != tc.changed || f.dest != tc.dest {
			t.Errorf("trace %d: changed %v dest %d, want %v %d", i, got, f.dest, tc.changed, tc.dest)
		}
	}
}

// A loss episode begins with a lost probe after a time without loss
// (hold: timeout + window + trace interval): only traces from then on
// localise it, traces of an earlier loss or started before the episode's
// first lost probe do not, and with on_loss the flow is due at once. A lost
// probe soon after another continues the episode.
func TestPathTraceEpisode(t *testing.T) {
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window, m.Flows = 5*time.Millisecond, time.Second, 10*time.Second, 1
	m.PathTrace = &config.PathTrace{Interval: time.Second, MaxHops: 4, OnLoss: true} // hold 1s + 10s + 1s
	ps := New(&m)
	trace := func(now int64, answered int) {
		n := ps.Begin(0, now)
		for ttl := 1; ttl <= n; ttl++ {
			ps.Settle(0, ttl, Answer{Addr: hopD, OK: ttl <= answered, Dest: ttl == n})
		}
		ps.Complete(0, now)
	}
	sec := int64(time.Second)
	ps.Lost(0, 1*sec) // an earlier loss
	trace(2*sec, 4)
	trace(20*sec, 4) // it ended
	trace(30*sec, 4) // started before the new loss's first lost probe
	if e, l := ps.flows[0].episode, ps.flows[0].lossy; e != 0 || l != 0b100 {
		t.Fatalf("episode %b, lossy traces %b before the loss; want none, 100", e, l)
	}
	ps.Lost(0, 31*sec)
	if f, c, _ := ps.Candidate(31 * sec); f != 0 || c != ClassOnLoss {
		t.Errorf("after the loss began: flow %d class %d, want 0 traced at once", f, c)
	}
	trace(31*sec, 1)
	ps.Lost(0, 32*sec) // the same episode
	trace(33*sec, 1)
	if e := ps.flows[0].episode; e != 0b11 || ps.flows[0].lossRose {
		t.Errorf("episode traces %b (loss rose again %v), want the last two", e, ps.flows[0].lossRose)
	}
	trace(50*sec, 4)
	if e := ps.flows[0].episode; e != 0 {
		t.Errorf("episode traces %b after a trace without loss, want none", e)
	}
}

// Partial loss on R2b -> R3 must not move the blame one hop on, to R3 -> D,
// at any point while the evidence builds: not when a trace's few far
// probes are all lost (they stop by chance, and R3 looks before the loss),
// nor when R3 happens to answer nearly every probe. The flows' window loss
// is as noisy as a real window's. Every localisation of every run counts,
// not only the first naming.
func TestPathTraceLocalisePartialLossNeverBlamesFarther(t *testing.T) {
	const runs, loss, window = 400, 0.10, 75
	rng := rand.New(rand.NewPCG(3, 4))
	wrongRuns, namedRuns := 0, 0
	for range runs {
		var b1, b2 []synthTrace
		healthy := repeat(3, synthTrace{ans: all3})
		wrong, named := false, false
		for range History - 3 {
			for _, b := range []*[]synthTrace{&b1, &b2} {
				*b = append(*b, synthTrace{lossy: true, ans: []bool{true, rng.Float64() >= loss, rng.Float64() >= loss}})
			}
			flows := []FlowView{
				synthFlow(1, true, viaB, append(slices.Clone(healthy), b1...)),
				synthFlow(2, true, viaB, append(slices.Clone(healthy), b2...)),
				synthFlow(3, false, viaA, healthy),
			}
			for i := range 2 {
				flows[i].Decided, flows[i].Lost = window, 0
				for range window {
					if rng.Float64() < loss {
						flows[i].Lost++
					}
				}
			}
			for _, l := range Localise(traceSrc, flows) {
				right := l.From == hopB && l.To == hopC
				named = named || right
				wrong = wrong || !right
			}
		}
		if wrong {
			wrongRuns++
		}
		if named {
			namedRuns++
		}
	}
	t.Logf("10%% loss, %d runs: right link named in %d, a wrong link named at some point in %d", runs, namedRuns, wrongRuns)
	if wrongRuns > runs/100 {
		t.Errorf("a wrong link was named in %d of %d runs, more than 1 %%", wrongRuns, runs)
	}
	if namedRuns < runs*9/10 {
		t.Errorf("the right link was named in only %d of %d runs", namedRuns, runs)
	}
}
