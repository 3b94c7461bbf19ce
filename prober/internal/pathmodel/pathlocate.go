package pathmodel

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// blameAlpha bounds the chance of naming the wrong link: the hop before
// the suspect link must have answered so many of the lossy flows' trace
// probes that, had they crossed the lossy link too, at least as many would
// have come back with probability at most blameAlpha.
const blameAlpha = 0.01

// stopFloor is the fewest unanswered trace probes to a single hop beyond a
// link, none answered, that name it as a black hole: at 10 % random loss
// three in a row are lost once in a thousand, two once in a hundred.
const stopFloor = 3

// SuspectLink is a link suspected of a session's loss: on the lossy flows
// that share one path, trace probes are answered up to From and lost from
// To on, while other flows (or the same flows before the loss) show that
// From and the hops beyond do answer.
type SuspectLink struct {
	// From is the last hop that still answers on the lossy flows; the
	// probes' source address when the first hop no longer answers.
	From netip.Addr
	// To is the next hop as earlier traces knew it; invalid when it never
	// answered.
	To netip.Addr
	// Flows are the source ports of the lossy flows on that path, in
	// ascending order.
	Flows []uint16
	// Direction is "forward" when the reflector counted that the flows'
	// probes were lost on the way out, which the traces follow; "unknown"
	// when it could not tell (a stateless reflector, or flows that lose
	// every probe). Loss known to be on the way back names no link.
	Direction string
}

// Directions of a suspect link's loss.
const (
	DirectionForward = "forward"
	DirectionUnknown = "unknown"
)

// String formats the link as "FROM -> TO (flows P1,P2)", TO "*" when
// unknown.
func (l SuspectLink) String() string {
	return fmt.Sprintf("%s -> %s (flows %s)", Label(l.From), Label(l.To), l.FlowList())
}

// FlowList returns the flows as a comma-separated list of source ports.
func (l SuspectLink) FlowList() string {
	s := make([]string, len(l.Flows))
	for i, p := range l.Flows {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// Label is an address as a label value: "*" for an unknown one, as in
// traceroute.
func Label(a netip.Addr) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// Localise names the suspect links of one session from its flows' paths;
// src is the probes' source address. See blame for the rule.
func Localise(src netip.Addr, flows []FlowView) []SuspectLink {
	healthy := healthyHops(flows)
	var links []SuspectLink
	for _, g := range lossyGroups(flows) {
		from, to, ok := g.blame(healthy)
		if !ok {
			continue
		}
		fa, ta := g.addr(from, src), g.addr(to, src)
		i := slices.IndexFunc(links, func(l SuspectLink) bool { return l.From == fa && l.To == ta })
		if i < 0 {
			links = append(links, SuspectLink{From: fa, To: ta, Direction: DirectionUnknown})
			i = len(links) - 1
		}
		links[i].Flows = append(links[i].Flows, g.ports...)
		if g.forward {
			links[i].Direction = DirectionForward
		}
	}
	for i := range links {
		slices.Sort(links[i].Flows)
	}
	slices.SortFunc(links, func(a, b SuspectLink) int {
		return cmp.Or(a.From.Compare(b.From), a.To.Compare(b.To))
	})
	return links
}

// healthyHops says, per hop (index = TTL), whether it answered a trace of
// any flow taken while that flow lost no probes.
func healthyHops(flows []FlowView) []bool {
	var out []bool
	for _, f := range flows {
		if out == nil {
			out = make([]bool, len(f.Hops)+1)
		}
		for i, h := range f.Hops {
			if h.Answered&f.Traces&^f.LossyTraces != 0 {
				out[i+1] = true
			}
		}
	}
	return out
}

// pathGroup is the lossy flows that share one hop list, with the answers
// of their traces in their current loss episode, per hop (index = TTL).
type pathGroup struct {
	addrs []netip.Addr // hop list; index 0 unused
	ports []uint16
	ans   []int // trace probes answered
	sent  []int // trace probes sent

	lost, decided int  // the flows' probes lost / decided in the window
	forward       bool // some flow's loss is known to be on the way out
}

// lossyGroups groups the flows losing probes now by hop list, leaving out
// those whose loss is known to be on the way back.
func lossyGroups(flows []FlowView) []*pathGroup {
	var groups []*pathGroup
	for _, f := range flows {
		if !f.Lossy || f.BackwardOnly() {
			continue
		}
		addrs := make([]netip.Addr, f.Length()+1)
		for i := 1; i < len(addrs); i++ {
			addrs[i] = f.Hops[i-1].Addr
		}
		i := slices.IndexFunc(groups, func(g *pathGroup) bool { return slices.Equal(g.addrs, addrs) })
		if i < 0 {
			n := len(f.Hops) + 1
			groups = append(groups, &pathGroup{addrs: addrs, ans: make([]int, n), sent: make([]int, n)})
			i = len(groups) - 1
		}
		g := groups[i]
		g.ports = append(g.ports, f.Port)
		g.forward = g.forward || f.forward()
		g.lost += f.Lost
		g.decided += f.Decided
		run := f.episode & f.Traces
		for j, h := range f.Hops {
			g.ans[j+1] += bits.OnesCount64(h.Answered & run)
			g.sent[j+1] += bits.OnesCount64(h.Sent & run)
		}
	}
	return groups
}

// addr returns the group's address of hop ttl; src for hop 0.
func (g *pathGroup) addr(ttl int, src netip.Addr) netip.Addr {
	if ttl == 0 {
		return src
	}
	if ttl < len(g.addrs) {
		return g.addrs[ttl]
	}
	return netip.Addr{}
}

// share is the share of hop ttl's trace probes answered; 1 for hop 0, the
// source itself.
func (g *pathGroup) share(ttl int) float64 {
	if ttl == 0 {
		return 1
	}
	return float64(g.ans[ttl]) / float64(g.sent[ttl])
}

// blame returns the suspect link (from, to), as TTLs, of the group's
// loss: of the hops h such that
//
//   - from, the hop before it, answers on the lossy flows (hop 0 is the
//     source), and has also answered on flows without loss;
//   - every probed hop from h on answers a smaller share than from: the
//     answers stop, or thin out, from h on;
//   - some hop from h on has answered on flows without loss;
//   - had from's probes crossed the lossy link, as many answers would have
//     come back with probability at most blameAlpha, and had h's, not;
//
// to is the one under which the answers are likeliest: those of the hops
// before it at one rate, from it on at another (a change point).
//
// A hop that alone never answers while later hops do is silent (it does
// not send ICMP, or rate-limits it): it is skipped, never blamed.
func (g *pathGroup) blame(healthy []bool) (from, to int, ok bool) {
	last := 0
	for i := 1; i < len(g.sent); i++ {
		if g.sent[i] > 0 {
			last = i
		}
	}
	silent := make([]bool, last+1)
	later := false
	for i := last; i >= 1; i-- {
		silent[i] = g.ans[i] == 0 && later
		later = later || g.ans[i] > 0
	}
	prev, best := 0, math.Inf(-1)
	for h := 1; h <= last; h++ {
		if silent[h] || g.sent[h] == 0 {
			continue
		}
		if g.suspect(prev, h, last, silent, healthy) {
			if ll := g.changePoint(h, last, silent); ll > best {
				from, to, ok, best = prev, h, true, ll
			}
		}
		prev = h
	}
	return from, to, ok
}

// changePoint is the log-likelihood of the answers of hops 1..last (silent
// ones left out) if those before h answer at one rate and those from h on
// at another, each rate its maximum-likelihood estimate.
func (g *pathGroup) changePoint(h, last int, silent []bool) float64 {
	var ans, sent [2]int
	for i := 1; i <= last; i++ {
		if !silent[i] {
			side := 0
			if i >= h {
				side = 1
			}
			ans[side] += g.ans[i]
			sent[side] += g.sent[i]
		}
	}
	ll := 0.0
	for side := range 2 {
		if a, m := float64(ans[side]), float64(sent[side]-ans[side]); a > 0 && m > 0 {
			p := a / (a + m)
			ll += a*math.Log(p) + m*math.Log1p(-p)
		}
	}
	return ll
}

// suspect checks the rule of blame for the link (from, h).
func (g *pathGroup) suspect(from, h, last int, silent, healthy []bool) bool {
	if from > 0 && (g.ans[from] == 0 || !healthy[from]) {
		return false
	}
	near := g.share(from)
	farAns, farSent, farHops, farHealthy := 0, 0, 0, false
	for j := h; j <= last; j++ {
		if silent[j] || g.sent[j] == 0 {
			continue
		}
		if g.share(j) >= near {
			return false
		}
		farAns += g.ans[j]
		farSent += g.sent[j]
		farHops++
		farHealthy = farHealthy || healthy[j]
	}
	// Answers that stop, not thin out, are the evidence of a black hole;
	// but the same far hop unanswered twice is 1 in 100 at 10 % loss, so a
	// stop at a single far hop counts only from stopFloor probes on.
	if farSent == 0 || !farHealthy || farAns == 0 && farSent < stopFloor && farHops < 2 {
		return false
	}
	// The share of probes that cross the lossy link: that of the far hops'
	// answers or, when the answers thin out rather than stop, that of the
	// flows' own probes if higher, which are many more and keep the
	// estimate from following the chance misses of a few hops.
	q := float64(farAns) / float64(farSent)
	if farAns > 0 && g.lost > 0 {
		q = max(q, 1-float64(g.lost)/float64(g.decided))
	}
	// h must not be surely before the loss, and from must be: had its
	// probes crossed the lossy link, so many answers would be unlikely.
	if binomialTail(g.ans[h], g.sent[h], q) <= blameAlpha {
		return false
	}
	if from == 0 {
		return true
	}
	// Where the answers thin out rather than stop, from must also answer
	// better than the far hops themselves, not only than q: a hop beyond
	// the loss that happened to answer every one of a few dozen probes
	// beats q by chance, but then the far hops answer about as well, and
	// the loss is not between them.
	if binomialTail(g.ans[from], g.sent[from], q) > blameAlpha {
		return false
	}
	pooled := float64(g.ans[from]+farAns) / float64(g.sent[from]+farSent)
	return farAns == 0 || binomialTail(g.ans[from], g.sent[from], pooled) <= blameAlpha
}

// binomialTail returns P(X >= k) for X binomial with n trials of success
// probability p.
func binomialTail(k, n int, p float64) float64 {
	switch {
	case k <= 0:
		return 1
	case k > n || p <= 0:
		return 0
	case p >= 1:
		return 1
	}
	lgN, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	sum := 0.0
	for i := k; i <= n; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgR, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lgN - lgI - lgR + float64(i)*lp + float64(n-i)*lq)
	}
	return min(sum, 1)
}
