package prober

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// tcpChildEnv passes a tcpChild, as JSON, to a child test process.
const tcpChildEnv = "LLAMA_TCP_CHILD"

// tcpResultPrefix starts the child's line that carries its tcpResult.
const tcpResultPrefix = "TCP-RESULT "

// tcpChild is a tcp session that a child test process runs inside a
// network namespace. The prober creates a socket per handshake, on
// goroutines of its own, and netns.Do places only the sockets of the
// calling goroutine in a namespace: so the whole child process runs there
// (ip netns exec), and reports a tcpResult.
type tcpChild struct {
	Target          string
	Interval        time.Duration
	Timeout         time.Duration // 0: fastModule's
	Flows           int           // 0: the default
	SourceIP        string
	SourcePortRange string
	FlowMetrics     bool
	// Probes is how many decided probes the window must hold before the
	// child reports.
	Probes int
}

// tcpResult is what a child found: the session's snapshot (NaN as -1) and
// its /probe page.
type tcpResult struct {
	Counters
	WindowSent, WindowLost         int
	LossRatio, RTTMin, RTTMax      float64
	KernelTimestamps               bool
	FlowWindowSent, FlowWindowLost []int
	FlowPorts                      []uint16
	SendErrors                     float64
	Page                           string
}

// TestTCPChild is the child process's side of runTCPChild; without the
// environment variable it does nothing.
func TestTCPChild(t *testing.T) {
	arg := os.Getenv(tcpChildEnv)
	if arg == "" {
		return
	}
	var c tcpChild
	if err := json.Unmarshal([]byte(arg), &c); err != nil {
		t.Fatal(err)
	}
	m := tcpModule(t, 0)
	m.Interval, m.SourceIPAddress, m.SourcePortRange, m.FlowMetrics = c.Interval, c.SourceIP, c.SourcePortRange, c.FlowMetrics
	if c.Timeout != 0 {
		m.Timeout = c.Timeout
	}
	if c.Flows != 0 {
		m.Flows = c.Flows
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	mgr := NewManager(Options{}, prometheus.NewRegistry(), discard)
	defer mgr.Close()
	cfg := &config.Config{Modules: map[string]*config.Module{"tcp": m}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	scrape := func() string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/probe?module=tcp&target="+url.QueryEscape(c.Target), nil))
		if w.Code != 200 {
			t.Fatalf("/probe: %d %s", w.Code, w.Body)
		}
		return w.Body.String()
	}
	scrape()
	s := mgr.Sessions()[0]
	testlab.WaitFor(t, 90*time.Second, fmt.Sprintf("%d decided probes in the window", c.Probes), func() bool {
		return s.Snapshot().WindowSent >= c.Probes
	})
	errs := testutil.ToFloat64(mgr.metrics.sendErrors.WithLabelValues("tcp")) // before the snapshot: errs <= Sent
	sn := s.Snapshot()
	r := tcpResult{Counters: sn.Counters, WindowSent: sn.WindowSent, WindowLost: sn.WindowLost,
		LossRatio: finite(sn.LossRatio), RTTMin: finite(sn.RTTMin), RTTMax: finite(sn.RTTMax),
		KernelTimestamps: sn.KernelTimestamps, FlowWindowSent: sn.FlowWindowSent, FlowWindowLost: sn.FlowWindowLost,
		SendErrors: errs, Page: scrape()}
	for i := range m.Flows {
		r.FlowPorts = append(r.FlowPorts, s.pool.flowPort(sn.Dst.Addr(), i))
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(tcpResultPrefix + string(b))
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return -1
	}
	return v
}

// runTCPChild runs c in a child test process inside ns and returns what it
// found.
func runTCPChild(t *testing.T, ns *netns.NS, c tcpChild) tcpResult {
	t.Helper()
	arg, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(os.Args[0], "-test.run=^TestTCPChild$", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), tcpChildEnv+"="+string(arg))
	out, err := cmd.CombinedOutput()
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, tcpResultPrefix); ok && err == nil {
			var r tcpResult
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("child test process in %s: %v\n%s", ns.Name, err, out)
	return tcpResult{}
}

// sink accepts connections on l, reads each to its end and closes it,
// counting the connections and the octets they carried; it stops when l
// is closed.
type sink struct {
	accepted, octets atomic.Int64
	wg               sync.WaitGroup
}

func newSink(t testing.TB, l net.Listener) *sink {
	k := &sink{}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			k.accepted.Add(1)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			k.octets.Add(n)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); k.wg.Wait() })
	return k
}

// tcpPair links a sender namespace to a target namespace over IPv4
// (198.18.30.1 → .2) and IPv6 (2001:2::1 → ::2, the IPv6 benchmarking
// prefix).
func tcpPair(t *testing.T) (s, d *netns.NS) {
	s, d = netns.New(t), netns.New(t)
	netns.Link(t, s, "198.18.30.1/30", d, "198.18.30.2/30")
	netns.Link(t, s, "2001:2::1/64", d, "2001:2::2/64")
	return s, d
}

// TestTCPHandshakes probes a listener on the target over IPv4 and IPv6:
// nothing is lost, RTTs are the kernel's and positive, the listener's
// application gets connections but not one octet, and the /probe page has
// none of the series that need a reflector.
func TestTCPHandshakes(t *testing.T) {
	s, d := tcpPair(t)
	for _, tc := range []struct{ name, addr string }{{"ipv4", "198.18.30.2:0"}, {"ipv6", "[2001:2::2]:0"}} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := d.Listen("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			k := newSink(t, l)
			r := runTCPChild(t, s, tcpChild{Target: l.Addr().String(), Interval: 5 * time.Millisecond, Probes: 300})
			t.Logf("%s: window %d/%d lost, RTT %.1f..%.1f µs, kernel %v; sink accepted %d", l.Addr(), r.WindowLost,
				r.WindowSent, r.RTTMin*1e6, r.RTTMax*1e6, r.KernelTimestamps, k.accepted.Load())
			if r.Lost != 0 || r.WindowLost != 0 || r.Received < 300 || r.SendErrors != 0 {
				t.Errorf("lost %d (window %d), received %d, send errors %v: want no loss", r.Lost, r.WindowLost, r.Received, r.SendErrors)
			}
			// The portable socket layer times everything in user space.
			if r.RTTMin <= 0 || r.KernelTimestamps != udpsock.KernelTimestamps {
				t.Errorf("RTT min %v, kernel %v: want > 0, by the kernel: %v", r.RTTMin, r.KernelTimestamps, udpsock.KernelTimestamps)
			}
			if k.accepted.Load() == 0 || k.octets.Load() != 0 {
				t.Errorf("the listener accepted %d connections carrying %d octets; want some, and no octet", k.accepted.Load(), k.octets.Load())
			}
			for _, name := range []string{"llama_probe_reflector_dwell_seconds", "llama_probe_forward_hops",
				"llama_probe_dscp_remarked_total", "llama_probe_packets_forward_lost_total"} {
				if strings.Contains(r.Page, name) {
					t.Errorf("/probe has %s", name)
				}
			}
			if !strings.Contains(r.Page, `prober="tcp"`) {
				t.Errorf("/probe lacks target_info with prober=\"tcp\"")
			}
		})
	}
}

// TestTCPRefusedIsAnswer probes a port nobody listens on: the target's RST
// answers every probe.
func TestTCPRefusedIsAnswer(t *testing.T) {
	s, _ := tcpPair(t)
	r := runTCPChild(t, s, tcpChild{Target: "198.18.30.2:9", Interval: 5 * time.Millisecond, Probes: 300})
	t.Logf("window %d/%d lost, RTT %.1f..%.1f µs, kernel %v", r.WindowLost, r.WindowSent, r.RTTMin*1e6, r.RTTMax*1e6, r.KernelTimestamps)
	if r.Lost != 0 || r.Received < 300 || r.RTTMin <= 0 {
		t.Errorf("lost %d, received %d, RTT min %v: want every refused probe answered, RTT > 0", r.Lost, r.Received, r.RTTMin)
	}
}

// TestTCPUnreachableIsSendError: a handshake the kernel refuses to start
// (an unreachable route) counts as a send error, as a datagram's failed
// send does, and its probe is lost.
func TestTCPUnreachableIsSendError(t *testing.T) {
	s, _ := tcpPair(t)
	s.Run(t, "ip", "route", "add", "unreachable", "198.18.36.0/24")
	r := runTCPChild(t, s, tcpChild{Target: "198.18.36.1:80", Interval: 5 * time.Millisecond, Probes: 100})
	t.Logf("sent %d, lost %d, send errors %v", r.Sent, r.Lost, r.SendErrors)
	if r.Received != 0 || r.Lost < 100 || r.SendErrors < float64(r.Lost) || r.SendErrors > float64(r.Sent) {
		t.Errorf("received %d, lost %d of %d, send errors %v: want every probe a send error, lost", r.Received, r.Lost, r.Sent, r.SendErrors)
	}
}

// TestTCPRandomSYNLoss drops 10% of the SYNs at random on the target
// (iptables' statistic match): over >= 2000 probes the window loss ratio
// is 0.10 ± 0.03. A dropped SYN is not retried into a long RTT.
func TestTCPRandomSYNLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ~10 s of probing")
	}
	netns.Require(t)
	testlab.RequireTool(t, "iptables")
	s, d := tcpPair(t)
	l, err := d.Listen("tcp", "198.18.30.2:0")
	if err != nil {
		t.Fatal(err)
	}
	newSink(t, l)
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	d.Run(t, "iptables", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", port,
		"-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
	r := runTCPChild(t, s, tcpChild{Target: l.Addr().String(), Interval: 3 * time.Millisecond, Probes: 2000})
	t.Logf("window %d/%d lost (ratio %.4f); RTT max %.1f µs; send errors %v", r.WindowLost, r.WindowSent, r.LossRatio, r.RTTMax*1e6, r.SendErrors)
	if math.Abs(r.LossRatio-0.10) > 0.03 {
		t.Errorf("window loss ratio %.4f, want 0.10 ± 0.03", r.LossRatio)
	}
	if r.RTTMax >= 0.5 {
		t.Errorf("RTT max %.3fs: a retransmitted SYN was timed as an answer", r.RTTMax)
	}
}

// TestTCPRetransmittedSYNIsLost drops the first 5 SYNs (an iptables quota
// of 300 octets, 60 per SYN); the kernel retransmits them after its
// initial RTO of 1s, within the module's 3s timeout, and the target
// answers. Those 5 probes are lost all the same, not answered with an RTT
// of 1s, or with the RTT of the retransmission. With 16 flows at 100ms no
// later probe of the same flow cancels a handshake before its
// retransmission.
func TestTCPRetransmittedSYNIsLost(t *testing.T) {
	netns.Require(t)
	testlab.RequireTool(t, "iptables")
	s, d := tcpPair(t)
	l, err := d.Listen("tcp", "198.18.30.2:0")
	if err != nil {
		t.Fatal(err)
	}
	newSink(t, l)
	d.Run(t, "iptables", "-A", "INPUT", "-p", "tcp", "--syn", "-m", "quota", "--quota", "300", "-j", "DROP")
	r := runTCPChild(t, s, tcpChild{Target: l.Addr().String(), Interval: 100 * time.Millisecond,
		Timeout: 3 * time.Second, Flows: 16, Probes: 25})
	t.Logf("sent %d, received %d, lost %d, late %d; RTT max %.1f µs", r.Sent, r.Received, r.Lost, r.Late, r.RTTMax*1e6)
	if r.Lost != 5 || r.RTTMax >= 0.5 {
		t.Errorf("lost %d, RTT max %.3fs; want the 5 probes whose SYN was retransmitted lost, and no long RTT", r.Lost, r.RTTMax)
	}
}

// brokenFlows asks the sender's kernel which of the flows source ports from
// firstPort hash onto the next hop that black-holes the target, and how
// many do.
func brokenFlows(t *testing.T, lab *ecmpLab, dport string, firstPort, flows int) (map[int]bool, int) {
	broken, n := map[int]bool{}, 0
	for i := range flows {
		out, err := lab.s.Command("ip", "route", "get", lab.target, "from", lab.sender, "ipproto", "tcp",
			"sport", fmt.Sprint(firstPort+i), "dport", dport).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route get: %v: %s", err, out)
		}
		if broken[i] = strings.Contains(string(out), "via "+lab.broken); broken[i] {
			n++
		}
	}
	return broken, n
}

// TestTCPECMPBlackHoleShowsInExactlyItsFlows is the ECMP black-hole test
// for handshakes: with one of two equal-cost next hops black-holing the
// target, the flows that lose every handshake are exactly those that
// `ip route get … ipproto tcp sport P` sends over it, and the others lose
// none.
func TestTCPECMPBlackHoleShowsInExactlyItsFlows(t *testing.T) {
	lab := newECMPLab(t, 40, "198.18.50.1", "198.18.51.1")
	s, d, sender, target := lab.s, lab.d, lab.sender, lab.target
	l, err := d.Listen("tcp", target+":0")
	if err != nil {
		t.Fatal(err)
	}
	newSink(t, l)
	dport := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)

	// The hash covers the listener's random port: slide the flows' ports
	// until some flows take each path.
	const flows = 8
	var firstPort, nBroken int
	var broken map[int]bool
	for firstPort = 40000; firstPort < 41000; firstPort += flows {
		broken, nBroken = brokenFlows(t, lab, dport, firstPort, flows)
		if nBroken > 0 && nBroken < flows {
			break
		}
	}
	if firstPort >= 41000 {
		t.Fatalf("no %d consecutive source ports from 40000 to 41000 hash onto both paths", flows)
	}
	r := runTCPChild(t, s, tcpChild{Target: l.Addr().String(), Interval: 5 * time.Millisecond, SourceIP: sender,
		SourcePortRange: fmt.Sprintf("%d-%d", firstPort, firstPort+flows-1), FlowMetrics: true, Probes: 100 * flows})
	for i := range flows {
		sent, lost := r.FlowWindowSent[i], r.FlowWindowLost[i]
		t.Logf("flow %d (sport %d): via R1 %v, window lost %d of %d", i, r.FlowPorts[i], broken[i], lost, sent)
		if broken[i] && lost != sent || !broken[i] && lost != 0 {
			t.Errorf("flow sport %d: via R1 %v but lost %d of %d", r.FlowPorts[i], broken[i], lost, sent)
		}
		if r.FlowPorts[i] != uint16(firstPort+i) {
			t.Errorf("flow %d has source port %d, want %d", i, r.FlowPorts[i], firstPort+i)
		}
	}
	if share := float64(nBroken) / flows; math.Abs(r.LossRatio-share) > 0.05 {
		t.Errorf("window loss ratio %.3f, want the broken share %.3f ± 0.05", r.LossRatio, share)
	}
}
