//go:build linux && !llama_portable

package prober

import (
	"context"
	"fmt"
	"math/bits"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
	"github.com/llama-exporter/llama_exporter/prober/internal/pathmodel"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// traceInterval is the path_trace interval of the namespace tests: short,
// so that the cases take seconds; a trace still starts at most once a
// second.
const traceInterval = 2 * time.Second

// traceLab is the network of the path tracing tests: the sender S has two
// uplinks, to routers R2a and R2b, with ECMP over them (L4 hash, in S: on
// veth a transit router would hash by the sending socket's hash rather than
// the 5-tuple, which `ip route get` cannot predict); both routers lead to
// R3, and R3 to D, which runs our reflector. Replies and R3's ICMP come
// back through R2a. Routers answer ICMP from their inbound address
// (icmp_errors_use_inbound_ifaddr=1) and keep the default ICMP rate limit.
//
//	S ─┬─ R2a ─┐
//	   └─ R2b ─┴─ R3 ── D
type traceLab struct {
	t                                  *testing.T
	v6                                 bool
	s, r2a, r2b, r3                    *netns.NS
	r2bToR3                            string // R2b's interface towards R3
	r2aAddr, r2bAddr, r3aAddr, r3bAddr netip.Addr
	target, sender                     netip.Addr
	sess                               *Session
	mgr                                *Manager
	mod                                *config.Module
	viaB                               map[uint16]bool // flows (source ports) that hash via R2b
	icmp0                              map[string]map[string]int64
	start                              time.Time
}

// labAddrs are the lab's addresses: per link, the two ends; then the
// sender's and the target's. 198.18.0.0/15 and its IPv6 counterpart
// 2001:2::/48 are reserved for benchmarking (RFC 2544, RFC 5180).
type labAddrs struct {
	link            [5][2]string // S-R2a, S-R2b, R2a-R3, R2b-R3, R3-D
	plen            string
	sender, target  string
	ipCmd, hostPlen string
}

var labV4 = labAddrs{
	link: [5][2]string{{"198.18.1.1", "198.18.1.2"}, {"198.18.2.1", "198.18.2.2"},
		{"198.18.3.1", "198.18.3.2"}, {"198.18.4.1", "198.18.4.2"}, {"198.18.5.1", "198.18.5.2"}},
	plen: "/30", sender: "198.18.20.1", target: "198.18.10.1", ipCmd: "-4", hostPlen: "/32",
}

var labV6 = labAddrs{
	link: [5][2]string{{"2001:2:0:1::1", "2001:2:0:1::2"}, {"2001:2:0:2::1", "2001:2:0:2::2"},
		{"2001:2:0:3::1", "2001:2:0:3::2"}, {"2001:2:0:4::1", "2001:2:0:4::2"}, {"2001:2:0:5::1", "2001:2:0:5::2"}},
	plen: "/64", sender: "2001:2:0:20::1", target: "2001:2:0:10::1", ipCmd: "-6", hostPlen: "/128",
}

// newTraceLab builds the lab, runs the reflector in D, lets prepare (if
// set) change the routers, and starts a traced session from S with 4 flows
// whose source ports hash 2 and 2 (or at least 1 and 3) over the uplinks.
func newTraceLab(t *testing.T, v6 bool, prepare func(*traceLab)) *traceLab {
	if testing.Short() {
		t.Skip("the path tracing cases judge timing over tens of seconds")
	}
	netns.Require(t)
	a := labV4
	if v6 {
		a = labV6
	}
	l := &traceLab{t: t, v6: v6, s: netns.New(t), r2a: netns.New(t), r2b: netns.New(t), r3: netns.New(t)}
	d := netns.New(t)
	sIf1, _ := netns.Link(t, l.s, a.link[0][0]+a.plen, l.r2a, a.link[0][1]+a.plen)
	sIf2, _ := netns.Link(t, l.s, a.link[1][0]+a.plen, l.r2b, a.link[1][1]+a.plen)
	netns.Link(t, l.r2a, a.link[2][0]+a.plen, l.r3, a.link[2][1]+a.plen)
	l.r2bToR3, _ = netns.Link(t, l.r2b, a.link[3][0]+a.plen, l.r3, a.link[3][1]+a.plen)
	netns.Link(t, l.r3, a.link[4][0]+a.plen, d, a.link[4][1]+a.plen)
	l.sender, l.target = netip.MustParseAddr(a.sender), netip.MustParseAddr(a.target)
	l.r2aAddr, l.r2bAddr = netip.MustParseAddr(a.link[0][1]), netip.MustParseAddr(a.link[1][1])
	l.r3aAddr, l.r3bAddr = netip.MustParseAddr(a.link[2][1]), netip.MustParseAddr(a.link[3][1])
	l.s.Run(t, "ip", "addr", "add", a.sender+a.hostPlen, "dev", "lo")
	d.Run(t, "ip", "addr", "add", a.target+a.hostPlen, "dev", "lo")
	l.sysctls(d)
	route := func(ns *netns.NS, args ...string) {
		ns.Run(t, append([]string{"ip", a.ipCmd, "route", "add"}, args...)...)
	}
	route(l.s, a.target+a.hostPlen, "nexthop", "via", a.link[0][1], "dev", sIf1, "nexthop", "via", a.link[1][1], "dev", sIf2)
	route(l.r2a, a.target+a.hostPlen, "via", a.link[2][1])
	route(l.r2b, a.target+a.hostPlen, "via", a.link[3][1])
	route(l.r3, a.target+a.hostPlen, "via", a.link[4][1])
	route(l.r2a, a.sender+a.hostPlen, "via", a.link[0][0])
	route(l.r2b, a.sender+a.hostPlen, "via", a.link[1][0])
	route(l.r3, a.sender+a.hostPlen, "via", a.link[2][0]) // back through R2a
	route(d, "default", "via", a.link[4][0])
	if err := d.Do(func() error {
		refl, err := reflector.New(reflector.Config{ListenAddresses: []string{netip.AddrPortFrom(l.target, 862).String()}}, nil, discard)
		if err != nil {
			return err
		}
		refl.Serve()
		t.Cleanup(func() { refl.Close() })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(l)
	}
	l.startSession()
	return l
}

// sysctls sets forwarding, ECMP hashing and ICMP source addresses.
func (l *traceLab) sysctls(d *netns.NS) {
	for _, ns := range []*netns.NS{l.s, l.r2a, l.r2b, l.r3, d} {
		if l.v6 {
			ns.Run(l.t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		} else {
			ns.Run(l.t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
				"net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_errors_use_inbound_ifaddr=1")
		}
	}
	if l.v6 {
		l.s.Run(l.t, "sysctl", "-qw", "net.ipv6.fib_multipath_hash_policy=1")
	} else {
		l.s.Run(l.t, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
	}
}

// viaR2b reports whether S routes UDP from port to the target via R2b.
func (l *traceLab) viaR2b(port int) bool {
	cmd := "-4"
	if l.v6 {
		cmd = "-6"
	}
	out, err := l.s.Command("ip", cmd, "route", "get", l.target.String(), "from", l.sender.String(), "ipproto", "udp",
		"sport", strconv.Itoa(port), "dport", "862").CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip route get: %v: %s", err, out)
	}
	return strings.Contains(string(out), "via "+l.r2bAddr.String()+" ")
}

// startSession picks 4 consecutive source ports split over both uplinks,
// 2 and 2 if it can, and starts the traced session.
func (l *traceLab) startSession() {
	const flows = 4
	first := 0
	for p := 40000; p < 41000 && first == 0; p += flows {
		n := 0
		for i := range flows {
			if l.viaR2b(p + i) {
				n++
			}
		}
		if n == 2 || n > 0 && n < flows && p > 40400 {
			first = p
		}
	}
	if first == 0 {
		l.t.Fatal("no 4 consecutive source ports split over both uplinks")
	}
	l.viaB = map[uint16]bool{}
	for i := range flows {
		l.viaB[uint16(first+i)] = l.viaR2b(first + i)
	}
	m := fastModule()
	m.Interval, m.Window, m.Flows = 20*time.Millisecond, 5*time.Second, flows
	m.SourcePortRange = fmt.Sprintf("%d-%d", first, first+flows-1)
	m.SourcePorts = [2]uint16{uint16(first), uint16(first + flows - 1)}
	m.SourceIP = l.sender
	m.IPProtocol = config.IPv4
	if l.v6 {
		m.IPProtocol = config.IPv6
	}
	m.PathTrace = &config.PathTrace{Interval: traceInterval, MaxHops: 8, OnLoss: true}
	l.mod = m
	l.mgr = NewManager(Options{}, nil, discard)
	l.t.Cleanup(l.mgr.Close)
	l.icmp0, l.start = l.icmpCounts(), time.Now()
	if err := l.s.Do(func() (err error) {
		l.sess, _, err = l.mgr.Get(context.Background(), "trace", m, l.target.String())
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
}

// ports returns the flows' source ports via R2b (b) or R2a, ascending.
func (l *traceLab) ports(b bool) []uint16 {
	var out []uint16
	for p, viaB := range l.viaB {
		if viaB == b {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// views returns the flows' paths now, and the snapshot they come from.
func (l *traceLab) views() ([]pathmodel.FlowView, Snapshot) {
	sn := l.sess.Snapshot()
	return l.sess.pathViews(&sn), sn
}

// waitPaths waits until every flow's latest trace, taken without loss,
// reached the target at TTL 3 (the routers' neighbour resolution may cost
// the very first probes).
func (l *traceLab) waitPaths() {
	testlab.WaitFor(l.t, 60*time.Second, "a trace of every flow to the target without loss", func() bool {
		vs, sn := l.views()
		for i, v := range vs {
			if v.Traces&^v.LossyTraces&1 == 0 || v.Length() != 3 || v.Hops[2].Answered&1 == 0 || v.Hops[2].Addr != l.target || sn.FlowWindowLost[i] != 0 {
				return false
			}
		}
		return true
	})
	vs, _ := l.views()
	for _, v := range vs {
		if hop2 := v.Hops[1].Addr; hop2 != l.r3aAddr && hop2 != l.r3bAddr {
			l.t.Errorf("flow %d: hop 2 is %v, not R3", v.Port, hop2)
		}
	}
}

// blameWatch polls the suspect links until done says so or the deadline
// passes, counting the polls that named a link other than allowed (nil:
// none allowed). It returns how long it took, and fails the test on
// timeout.
func (l *traceLab) blameWatch(what string, deadline time.Duration, allowed *pathmodel.SuspectLink, done func([]pathmodel.SuspectLink) bool) (time.Duration, int) {
	start := time.Now()
	falseBlames := 0
	for {
		links := l.sess.SuspectLinks()
		for _, k := range links {
			if allowed == nil || k.From != allowed.From || k.To != allowed.To || slices.ContainsFunc(k.Flows, func(p uint16) bool { return !l.viaB[p] }) {
				falseBlames++
				if falseBlames == 1 {
					l.t.Logf("%s: false blame %v; debug=true:\n%s", what, k, scrapeIn(l.t, l, "&debug=true"))
				}
			}
		}
		if done(links) {
			return time.Since(start), falseBlames
		}
		if time.Since(start) > deadline {
			l.t.Fatalf("timed out after %v waiting for %s; suspect links %v; debug=true:\n%s", deadline, what, links, scrapeIn(l.t, l, "&debug=true"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// named reports whether links is exactly want.
func named(links []pathmodel.SuspectLink, want pathmodel.SuspectLink) bool {
	return len(links) == 1 && links[0].From == want.From && links[0].To == want.To && slices.Equal(links[0].Flows, want.Flows)
}

// icmpCounts reads the ICMP output counters of each router.
func (l *traceLab) icmpCounts() map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for name, ns := range map[string]*netns.NS{"R2a": l.r2a, "R2b": l.r2b, "R3": l.r3} {
		out[name] = readICMPCounters(l.t, ns, l.v6)
	}
	return out
}

// readICMPCounters returns the router's Time Exceeded messages sent and
// the ICMP messages its per-destination rate limit suppressed.
func readICMPCounters(t *testing.T, ns *netns.NS, v6 bool) map[string]int64 {
	file, prefix := "/proc/net/snmp", ""
	if v6 {
		file, prefix = "/proc/net/snmp6", "Icmp6"
	}
	b, err := ns.Command("cat", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	// snmp6: "Icmp6OutTimeExcds N" lines; snmp: an "Icmp:" line of names
	// followed by an "Icmp:" line of values.
	vals := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if v6 && len(f) == 2 {
			vals[f[0]] = f[1]
		}
		if !v6 && len(f) > 1 && f[0] == "Icmp:" && i+1 < len(lines) && f[1] == "InMsgs" {
			v := strings.Fields(lines[i+1])
			for j := 1; j < len(f) && j < len(v); j++ {
				vals[f[j]] = v[j]
			}
		}
	}
	c := map[string]int64{}
	for _, name := range []string{"OutTimeExcds", "OutRateLimitHost"} {
		n, err := strconv.ParseInt(vals[prefix+name], 10, 64)
		if err != nil {
			t.Fatalf("%s has no %s%s", file, prefix, name)
		}
		c[name] = n
	}
	return c
}

// checkLoad reports each router's Time Exceeded messages per second since
// the session started, and fails if a router's rate limit suppressed any
// or if one sent more than one a second.
func (l *traceLab) checkLoad() {
	secs := time.Since(l.start).Seconds()
	now := l.icmpCounts()
	var report []string
	for _, r := range []string{"R2a", "R2b", "R3"} {
		te := now[r]["OutTimeExcds"] - l.icmp0[r]["OutTimeExcds"]
		limited := now[r]["OutRateLimitHost"] - l.icmp0[r]["OutRateLimitHost"]
		report = append(report, fmt.Sprintf("%s %.2f/s (%d in %.0fs, %d rate-limited)", r, float64(te)/secs, te, secs, limited))
		if limited != 0 || float64(te) > secs+1 {
			l.t.Errorf("router %s: %d Time Exceeded in %.1fs, %d suppressed by its rate limit; want at most one a second, none suppressed", r, te, secs, limited)
		}
	}
	l.t.Logf("trace load (ICMP Time Exceeded per router): %s", strings.Join(report, ", "))
}

// iptables runs iptables (ip6tables for IPv6) in ns.
func (l *traceLab) iptables(ns *netns.NS, args ...string) {
	cmd := "iptables"
	if l.v6 {
		cmd = "ip6tables"
	}
	if _, err := exec.LookPath(cmd); err != nil {
		l.t.Fatalf("%s is not installed (Debian: apt-get install iptables): %v", cmd, err)
	}
	ns.Run(l.t, append([]string{cmd}, args...)...)
}

// blackHoleCase: a FORWARD drop on R2b's interface towards R3 (R2b still
// answers Time Exceeded). The flows via R2b lose everything and name
// R2b -> R3 within two trace intervals; the flows via R2a lose nothing and
// are never named.
func blackHoleCase(t *testing.T, l *traceLab) (want pathmodel.SuspectLink, falseBlames int) {
	l.waitPaths()
	vs, _ := l.views()
	want = pathmodel.SuspectLink{From: l.r2bAddr, To: vs[slices.IndexFunc(vs, func(v pathmodel.FlowView) bool { return l.viaB[v.Port] })].Hops[1].Addr, Flows: l.ports(true)}
	rule := []string{"FORWARD", "-o", l.r2bToR3, "-j", "DROP"}
	l.iptables(l.r2b, append([]string{"-I"}, rule...)...)
	took, fb := l.blameWatch("the black hole named", 30*time.Second, &want, func(links []pathmodel.SuspectLink) bool { return named(links, want) })
	t.Logf("black hole on R2b -> R3: %v named after %v (trace interval %v), %d false blames", want, took.Round(time.Millisecond), traceInterval, fb)
	if took > 2*traceInterval {
		t.Errorf("the black hole was named after %v, more than 2 trace intervals (%v)", took, 2*traceInterval)
	}
	_, fb2 := l.blameWatch("100% loss via R2b, none via R2a", 30*time.Second, &want, func(links []pathmodel.SuspectLink) bool {
		vs, sn := l.views()
		for i, p := range vs {
			lossy := sn.FlowWindowLost[i] == sn.FlowWindowSent[i] && sn.FlowWindowSent[i] > 0
			if l.viaB[p.Port] != lossy || !l.viaB[p.Port] && sn.FlowWindowLost[i] != 0 {
				return false
			}
		}
		return named(links, want)
	})
	return want, fb + fb2
}

// Cases 1 and 3: a black hole on the link R2b -> R3 is named, and the
// suspect clears once the flows' loss has cleared.
func TestPathTraceBlackHoleNamedAndCleared(t *testing.T) {
	l := newTraceLab(t, false, nil)
	want, falseBlames := blackHoleCase(t, l)
	t.Logf("debug=true during the black hole:\n%s", scrapeIn(t, l, "&debug=true"))
	checkPromtool(t, scrapeIn(t, l, ""))

	l.iptables(l.r2b, "-D", "FORWARD", "-o", l.r2bToR3, "-j", "DROP")
	_, fb := l.blameWatch("the flows' loss to clear", 30*time.Second, &want, func([]pathmodel.SuspectLink) bool {
		_, sn := l.views()
		return !slices.ContainsFunc(sn.FlowWindowLost, func(n int) bool { return n > 0 })
	})
	took, fb2 := l.blameWatch("the suspect to clear", 2*traceInterval, &want, func(links []pathmodel.SuspectLink) bool { return len(links) == 0 })
	t.Logf("fault removed: suspect cleared %v after the loss did; %d false blames over the run", took.Round(time.Millisecond), falseBlames+fb+fb2)
	if falseBlames+fb+fb2 != 0 {
		t.Errorf("%d false blames", falseBlames+fb+fb2)
	}
	l.checkLoad()
}

// Case 5: the black hole over IPv6.
func TestPathTraceBlackHoleIPv6(t *testing.T) {
	l := newTraceLab(t, true, nil)
	_, falseBlames := blackHoleCase(t, l)
	if falseBlames != 0 {
		t.Errorf("%d false blames", falseBlames)
	}
	l.checkLoad()
}

// Case 2: 10% random drop on the link R2b -> R3 only: the same link is
// named, once the answers of R2b make it unlikely that R2b lies beyond the
// loss; no other link is.
func TestPathTraceRandomDropNamed(t *testing.T) {
	l := newTraceLab(t, false, nil)
	l.waitPaths()
	vs, _ := l.views()
	want := pathmodel.SuspectLink{From: l.r2bAddr, To: vs[slices.IndexFunc(vs, func(v pathmodel.FlowView) bool { return l.viaB[v.Port] })].Hops[1].Addr, Flows: l.ports(true)}
	l.iptables(l.r2b, "-I", "FORWARD", "-o", l.r2bToR3, "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
	took, falseBlames := l.blameWatch("the lossy link named", 4*time.Minute, &want, func(links []pathmodel.SuspectLink) bool { return named(links, want) })
	vs, sn := l.views()
	traces := 0
	for _, v := range vs {
		if l.viaB[v.Port] {
			traces += bits.OnesCount64(v.LossyTraces)
		}
	}
	t.Logf("10%% drop on R2b -> R3: %v named after %v (%d traces of the lossy flows), window loss %.3f, %d false blames",
		want, took.Round(time.Millisecond), traces, sn.LossRatio, falseBlames)
	if falseBlames != 0 {
		t.Errorf("%d false blames", falseBlames)
	}
	l.checkLoad()
}

// Case 4: R2a sends no Time Exceeded at all. It shows as an unanswering
// hop on its flows, whose later hops answer, and is never blamed: not
// while nothing is lost, nor when R2b's link black-holes.
func TestPathTraceSilentRouterNeverBlamed(t *testing.T) {
	l := newTraceLab(t, false, func(l *traceLab) {
		l.iptables(l.r2a, "-I", "OUTPUT", "-p", "icmp", "--icmp-type", "time-exceeded", "-j", "DROP")
	})
	testlab.WaitFor(t, 60*time.Second, "two traces of every flow", func() bool {
		vs, _ := l.views()
		return !slices.ContainsFunc(vs, func(v pathmodel.FlowView) bool { return v.Done < 2 })
	})
	vs, _ := l.views()
	for _, v := range vs {
		silent := v.Hops[0].Answered == 0 && !v.Hops[0].Addr.IsValid()
		if !l.viaB[v.Port] && (!silent || v.Hops[1].Answered == 0 || v.Length() != 3) {
			t.Errorf("flow %d via R2a: hop 1 %v (answers %b), hop 2 answers %b, %d hops; want hop 1 unanswering, later hops answering",
				v.Port, v.Hops[0].Addr, v.Hops[0].Answered, v.Hops[1].Answered, v.Length())
		}
	}
	if links := l.sess.SuspectLinks(); len(links) != 0 {
		t.Errorf("suspect links without loss: %v", links)
	}
	if body := scrapeIn(t, l, ""); !strings.Contains(body, `llama_probe_path_hop_info{address="*",flow="`+strconv.Itoa(int(l.ports(false)[0]))+`",hop="1"} 1`) {
		t.Errorf("/probe does not show R2a's flows' first hop as unanswering:\n%s", body)
	}
	_, falseBlames := blackHoleCase(t, l)
	if falseBlames != 0 {
		t.Errorf("%d false blames", falseBlames)
	}
	l.checkLoad()
}

// scrapeIn serves /probe for the lab's session (it exists: no socket is
// opened outside S).
func scrapeIn(t *testing.T, l *traceLab, extra string) string {
	return scrape(t, l.mgr, l.mod, l.target.String(), extra)
}

// checkPromtool runs promtool check metrics on a /probe exposition when
// promtool is installed (CI installs it).
func checkPromtool(t *testing.T, body string) {
	p, err := exec.LookPath("promtool")
	if err != nil {
		if testlab.CI() {
			t.Fatalf("promtool is not installed: %v", err)
		}
		t.Logf("promtool not installed: /probe output not checked")
		return
	}
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\non:\n%s", err, out, body)
	}
}
