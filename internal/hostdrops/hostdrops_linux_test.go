//go:build linux

package hostdrops

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// Addresses of the two ends of every lab: a prober host and a reflector
// host.
const (
	proberAddr    = "198.18.0.1"
	reflectorAddr = "198.18.0.2"
)

// Ports of the cases; the twin lab uses the same.
const (
	reflPort    = 40862 // a reflector behind an iptables DROP
	noSockPort  = 40863 // a reflector port nothing listens on
	flowPort    = 41000 // a prober flow socket with a full receive buffer
	tcpPort     = 40443 // the tcp prober's target
	tcpFlowBase = 42000 // the tcp prober's flow ports, one per handshake
)

// lab is a prober host and a reflector host in two namespaces joined by a
// veth link.
type lab struct{ prober, reflector *netns.NS }

func newLab(t *testing.T) *lab {
	l := &lab{prober: netns.New(t), reflector: netns.New(t)}
	netns.Link(t, l.prober, proberAddr+"/30", l.reflector, reflectorAddr+"/30")
	// Ping sockets for root (the icmp prober uses them when allowed), and
	// no SYN-ACK retransmission, so that one SYN draws one SYN-ACK.
	l.prober.Run(t, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")
	l.reflector.Run(t, "sysctl", "-q", "-w", "net.ipv4.tcp_synack_retries=0")
	l.prober.Run(t, "ping", "-c", "1", "-W", "2", reflectorAddr) // resolves the neighbours
	return l
}

// requireTools fails under CI=true, and skips otherwise, when the tests
// cannot run here.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	netns.Require(t)
	for _, tool := range tools {
		testlab.RequireTool(t, tool)
	}
}

// dropCounter is a Collector, in this process or in a helper process with
// fewer capabilities.
type dropCounter interface {
	WatchReflector(port uint16)
	WatchPort(proto string, port uint16)
	Drops() map[Drop]uint64
	Err() error
	Close() error
}

// opener starts a drop counter in a namespace.
type opener func(t *testing.T, ns *netns.NS) dropCounter

// inProcess opens a Collector in this process, on a thread in ns.
func inProcess(t *testing.T, ns *netns.NS) dropCounter {
	var c *Collector
	if err := ns.Do(func() error { c = New(); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDropsCountedExactly runs every drop case with root's capabilities.
func TestDropsCountedExactly(t *testing.T) {
	requireTools(t, "iptables", "sysctl", "ping")
	runCases(t, inProcess)
}

// TestDropsWithOnlyBPFAndPerfmon runs every case with a collector in a
// process that has CAP_BPF and CAP_PERFMON and nothing else.
func TestDropsWithOnlyBPFAndPerfmon(t *testing.T) {
	requireTools(t, "iptables", "sysctl", "ping", "setpriv")
	runCases(t, helper("-all,+bpf,+perfmon", 1<<unix.CAP_BPF|1<<unix.CAP_PERFMON))
}

// TestWithoutCapabilitiesDisabled checks that without CAP_BPF and
// CAP_PERFMON the collector says what is missing and counts nothing.
func TestWithoutCapabilitiesDisabled(t *testing.T) {
	requireTools(t, "setpriv")
	ns := netns.New(t)
	c := helper("-all", 0)(t, ns)
	err := c.Err()
	if err == nil || !strings.Contains(err.Error(), "CAP_BPF and CAP_PERFMON") {
		t.Fatalf("error %v, want one naming CAP_BPF and CAP_PERFMON", err)
	}
	if d := c.Drops(); len(d) != 0 {
		t.Errorf("a disabled collector reports drops %v", d)
	}
}

// runCases makes each drop, N times in a lab and N+extra times at once in a
// twin lab with the same addresses and ports, and checks that the counters
// opened by open in the lab count exactly the lab's drops, as the kernel's
// own counters (iptables rule counters, /proc/net/snmp) count them.
func runCases(t *testing.T, open opener) {
	main, twin := newLab(t), newLab(t)
	atProber, atReflector := open(t, main.prober), open(t, main.reflector)
	for _, c := range []dropCounter{atProber, atReflector} {
		if err := c.Err(); err != nil {
			if os.Getenv("CI") != "true" {
				t.Skipf("collector did not start: %v", err)
			}
			t.Fatalf("collector did not start: %v (failing rather than skipping because CI=true)", err)
		}
	}
	atReflector.WatchReflector(reflPort)
	atReflector.WatchReflector(noSockPort)
	atProber.WatchPort(UDP, flowPort)
	for i := range tcpHandshakes {
		atProber.WatchPort(TCP, tcpFlowBase+uint16(i))
	}

	for _, tc := range []struct {
		name   string
		n      int
		at     dropCounter
		want   Drop
		run    caseFunc
		kernel func(t *testing.T, l *lab) int // the kernel's own count so far
		least  int                            // drops the kernel must count of n
	}{
		{"iptables DROP at the reflector", 300, atReflector, Drop{"netfilter_drop", "probe_in"}, sendProbes(reflPort),
			ruleCounter(func(l *lab) *netns.NS { return l.reflector }), 300},
		{"no reflector listening", 300, atReflector, Drop{"no_socket", "probe_in"}, sendProbes(noSockPort),
			snmpCounter(func(l *lab) *netns.NS { return l.reflector }, "NoPorts"), 300},
		{"full receive buffer at the prober", 300, atProber, Drop{"socket_rcvbuff", "reply_in"}, fillReceiveBuffer,
			snmpCounter(func(l *lab) *netns.NS { return l.prober }, "RcvbufErrors"), 300 - rcvbufHolds},
		{"echo replies dropped at the prober", 100, atProber, Drop{"netfilter_drop", "icmp_reply_in"}, echoRepliesDropped,
			ruleCounter(func(l *lab) *netns.NS { return l.prober }), 100},
		{"SYN-ACKs dropped at the prober", tcpHandshakes, atProber, Drop{"netfilter_drop", "tcp_synack_in"}, synAcksDropped,
			ruleCounter(func(l *lab) *netns.NS { return l.prober }), tcpHandshakes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.at.Drops()
			kernelBefore := tc.kernel(t, main)
			var wg sync.WaitGroup
			wg.Add(1)
			var twinDone func()
			go func() { // the twin's traffic, at the same time, a little more of it
				defer wg.Done()
				twinDone = tc.run(t, twin, tc.n+3, nil)
			}()
			done := tc.run(t, main, tc.n, tc.at)
			wg.Wait()
			defer done()
			defer twinDone()
			var got, kernel int
			deadline := time.Now().Add(5 * time.Second)
			for {
				got = int(tc.at.Drops()[tc.want] - before[tc.want])
				kernel = tc.kernel(t, main) - kernelBefore
				if (got == kernel && kernel >= tc.least) || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s: sent %d, kernel counted %d, collector counted %d %v", tc.name, tc.n, kernel, got, tc.want)
			if got != kernel {
				t.Errorf("collector counted %d drops %v, the kernel %d", got, tc.want, kernel)
			}
			if kernel < tc.least || kernel > tc.n {
				t.Errorf("the kernel counted %d drops of %d sent, want at least %d: the case did not drop what it should", kernel, tc.n, tc.least)
			}
			for d, n := range tc.at.Drops() {
				if d != tc.want && n != before[d] {
					t.Errorf("series %v moved by %d, want only %v", d, n-before[d], tc.want)
				}
			}
		})
	}
}

// caseFunc makes a case's drops: n of them in lab l, whose counter c
// watches what the case needs (nil for the twin lab). It returns what
// undoes it (rules, sockets), called once the counts are checked.
type caseFunc func(t *testing.T, l *lab, n int, c dropCounter) (done func())

// sendProbes sends n datagrams from the prober host to port on the
// reflector host; an iptables DROP on it is added first when the port is
// reflPort, and a socket listens there so that only the rule drops.
func sendProbes(port int) caseFunc {
	return func(t *testing.T, l *lab, n int, _ dropCounter) func() {
		var undo []func()
		done := func() {
			for _, f := range undo {
				f()
			}
		}
		if port == reflPort {
			refl, err := l.reflector.ListenUDP("udp4", net.JoinHostPort(reflectorAddr, strconv.Itoa(port)))
			if err != nil {
				t.Error(err)
				return done
			}
			rule := []string{"INPUT", "-p", "udp", "--dport", strconv.Itoa(port), "-j", "DROP"}
			l.reflector.Run(t, append([]string{"iptables", "-w", "-I"}, rule...)...)
			undo = append(undo, func() {
				refl.Close()
				l.reflector.Run(t, append([]string{"iptables", "-w", "-D"}, rule...)...)
			})
		}
		c, err := l.prober.ListenUDP("udp4", proberAddr+":0")
		if err != nil {
			t.Error(err)
			return done
		}
		defer c.Close()
		to := &net.UDPAddr{IP: net.ParseIP(reflectorAddr), Port: port}
		for range n {
			if _, err := c.WriteToUDP(make([]byte, 44), to); err != nil {
				t.Error(err)
				break
			}
		}
		return done
	}
}

// rcvbufHolds bounds how many small datagrams the smallest receive buffer
// (SOCK_MIN_RCVBUF, about 2 KiB) takes before the kernel drops.
const rcvbufHolds = 8

// fillReceiveBuffer sends n replies from the reflector host to a prober
// flow socket whose receive buffer is the smallest the kernel allows and
// which never reads: the kernel drops those that do not fit.
func fillReceiveBuffer(t *testing.T, l *lab, n int, _ dropCounter) func() {
	flow, err := l.prober.ListenUDP("udp4", net.JoinHostPort(proberAddr, strconv.Itoa(flowPort)))
	if err != nil {
		t.Error(err)
		return func() {}
	}
	// Read what was queued before closing: closing would drop it
	// (socket_close), a series this case must not move.
	done := func() {
		buf := make([]byte, 100)
		for {
			flow.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := flow.ReadFromUDP(buf); err != nil {
				break
			}
		}
		flow.Close()
	}
	if err := flow.SetReadBuffer(1); err != nil {
		t.Error(err)
		return done
	}
	c, err := l.reflector.ListenUDP("udp4", reflectorAddr+":0")
	if err != nil {
		t.Error(err)
		return done
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.ParseIP(proberAddr), Port: flowPort}
	for range n {
		if _, err := c.WriteToUDP(make([]byte, 44), to); err != nil {
			t.Error(err)
			break
		}
	}
	return done
}

// icmpID is the echo Identifier of the ping socket of the echo case, the
// same in both labs.
const icmpID = 4242

// echoRepliesDropped sends n echo requests from a ping socket of the prober
// host, whose echo replies iptables drops there.
func echoRepliesDropped(t *testing.T, l *lab, n int, c dropCounter) func() {
	var fd int
	err := l.prober.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP); err != nil {
			return fmt.Errorf("ping socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: icmpID, Addr: [4]byte{198, 18, 0, 1}})
	})
	if err != nil {
		t.Error(err)
		return func() {}
	}
	if c != nil {
		c.WatchPort(ICMP, icmpID)
	}
	rule := []string{"INPUT", "-p", "icmp", "--icmp-type", "echo-reply", "-j", "DROP"}
	l.prober.Run(t, append([]string{"iptables", "-w", "-I"}, rule...)...)
	done := func() {
		unix.Close(fd)
		l.prober.Run(t, append([]string{"iptables", "-w", "-D"}, rule...)...)
	}
	to := &unix.SockaddrInet4{Addr: [4]byte{198, 18, 0, 2}}
	for i := range n {
		m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: icmpID, Seq: i, Data: []byte("LLMI-test")}}
		b, _ := m.Marshal(nil)
		if err := unix.Sendto(fd, b, 0, to); err != nil {
			t.Error(err)
			break
		}
	}
	return done
}

// tcpHandshakes is how many SYNs the SYN-ACK case sends.
const tcpHandshakes = 20

// synAcksDropped starts n handshakes from the prober host, each from its
// own flow port, to a listener on the reflector host; iptables drops the
// SYN-ACKs at the prober. Each connect is abandoned long before the SYN's
// retransmission (1 s), and the listener retransmits no SYN-ACK
// (tcp_synack_retries 0), so that there is exactly one SYN-ACK per
// handshake.
func synAcksDropped(t *testing.T, l *lab, n int, _ dropCounter) func() {
	ln, err := l.reflector.Listen("tcp4", net.JoinHostPort(reflectorAddr, strconv.Itoa(tcpPort)))
	if err != nil {
		t.Error(err)
		return func() {}
	}
	rule := []string{"INPUT", "-p", "tcp", "--sport", strconv.Itoa(tcpPort), "--tcp-flags", "SYN,ACK,RST", "SYN,ACK", "-j", "DROP"}
	l.prober.Run(t, append([]string{"iptables", "-w", "-I"}, rule...)...)
	done := func() {
		ln.Close()
		l.prober.Run(t, append([]string{"iptables", "-w", "-D"}, rule...)...)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{
				Timeout:   300 * time.Millisecond,
				LocalAddr: &net.TCPAddr{IP: net.ParseIP(proberAddr), Port: tcpFlowBase + i},
				Control: func(_, _ string, c syscall.RawConn) error {
					return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				},
			}
			err := l.prober.Do(func() error {
				c, err := d.Dial("tcp4", net.JoinHostPort(reflectorAddr, strconv.Itoa(tcpPort)))
				if err == nil {
					c.Close()
					return fmt.Errorf("handshake from port %d completed through the DROP rule", tcpFlowBase+i)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	return done
}

// ruleCounter returns the packet counter of the first rule of the INPUT
// chain in the lab's namespace that ns picks, 0 without a rule.
func ruleCounter(ns func(*lab) *netns.NS) func(t *testing.T, l *lab) int {
	return func(t *testing.T, l *lab) int {
		out, err := ns(l).Command("iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables: %v: %s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) < 3 {
			return 0
		}
		n, err := strconv.Atoi(strings.Fields(lines[2])[0])
		if err != nil {
			t.Fatalf("iptables rule line %q: %v", lines[2], err)
		}
		return n
	}
}

// snmpCounter returns the Udp: counter field of /proc/net/snmp in the
// lab's namespace that ns picks.
func snmpCounter(ns func(*lab) *netns.NS, field string) func(t *testing.T, l *lab) int {
	return func(t *testing.T, l *lab) int { return snmpValue(t, ns(l), field) }
}

func snmpValue(t *testing.T, ns *netns.NS, field string) int {
	return snmpField(t, ns, "Udp:", field)
}

// snmpField reads the counter field of the line pair prefix ("Udp:") of
// /proc/net/snmp in ns.
func snmpField(t *testing.T, ns *netns.NS, prefix, field string) int {
	out, err := ns.Command("cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("reading /proc/net/snmp in %s: %v", ns.Name, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)[1:]
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == field && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	t.Fatalf("/proc/net/snmp has no %s %s", prefix, field)
	return 0
}

// helperEnv asks the test binary to be a collector helper process.
const helperEnv = "LLAMA_HOSTDROPS_HELPER"

// helper returns an opener that runs a Collector in a helper process: the
// test binary, in ns, with only the capabilities of the bounding set caps
// (setpriv syntax, as "-all,+bpf,+perfmon"), which must leave it the
// effective capabilities capEff.
func helper(caps string, capEff uint64) opener {
	return func(t *testing.T, ns *netns.NS) dropCounter {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := ns.Command("setpriv", "--bounding-set="+caps, "--inh-caps=-all", "--", self, "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		h := &helperCounter{in: in, out: bufio.NewScanner(out)}
		t.Cleanup(func() {
			in.Close()
			cmd.Wait()
		})
		var started struct {
			Err    string
			CapEff uint64
		}
		h.read(&started)
		if started.CapEff != capEff {
			t.Fatalf("helper process has capabilities %#x, want %#x", started.CapEff, capEff)
		}
		if started.Err != "" {
			h.err = fmt.Errorf("%s", started.Err)
		}
		return h
	}
}

// helperCounter talks to a helper process: one command line in, one JSON
// line out.
type helperCounter struct {
	mu  sync.Mutex
	in  interface{ Write([]byte) (int, error) }
	out *bufio.Scanner
	err error
}

func (h *helperCounter) read(v any) {
	if !h.out.Scan() {
		h.err = fmt.Errorf("helper process ended: %v", h.out.Err())
		return
	}
	if err := json.Unmarshal(h.out.Bytes(), v); err != nil {
		h.err = fmt.Errorf("helper process said %q: %v", h.out.Text(), err)
	}
}

func (h *helperCounter) command(line string, v any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintln(h.in, line)
	h.read(v)
}

func (h *helperCounter) WatchReflector(port uint16) {
	h.command(fmt.Sprintf("reflector %d", port), new(struct{}))
}
func (h *helperCounter) WatchPort(proto string, port uint16) {
	h.command(fmt.Sprintf("%s %d", proto, port), new(struct{}))
}
func (h *helperCounter) Err() error   { return h.err }
func (h *helperCounter) Close() error { return nil }

func (h *helperCounter) Drops() map[Drop]uint64 {
	var list []struct {
		Drop
		N uint64
	}
	h.command("drops", &list)
	m := make(map[Drop]uint64, len(list))
	for _, d := range list {
		m[d.Drop] = d.N
	}
	return m
}

// TestHelperProcess is the helper process of helper, not a test: it opens
// a Collector and answers commands on stdin ("reflector PORT", "udp PORT",
// "icmp ID", "tcp PORT", "drops") with one JSON line each.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	c := New()
	enc := json.NewEncoder(os.Stdout)
	errText := ""
	if c.Err() != nil {
		errText = c.Err().Error()
	}
	enc.Encode(struct {
		Err    string
		CapEff uint64
	}{errText, capEff()})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "drops" {
			type row struct {
				Drop
				N uint64
			}
			list := []row{}
			for d, n := range c.Drops() {
				list = append(list, row{d, n})
			}
			enc.Encode(list)
			continue
		}
		port, _ := strconv.Atoi(f[len(f)-1])
		if f[0] == "reflector" {
			c.WatchReflector(uint16(port))
		} else {
			c.WatchPort(f[0], uint16(port))
		}
		enc.Encode(struct{}{})
	}
	c.Close()
	os.Exit(0)
}

// capEff returns the process's effective capabilities.
func capEff() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n
		}
	}
	return 0
}

// Ports of the receive latency smoke test.
const (
	latReflPort = 40870
	latFlowPort = 41010
)

// TestReceiveLatencyCountsEveryProbe sends probes from a prober flow
// socket to a reflector socket in a lab, one at a time, each answered, and
// checks that every stage of each side's receive latency counted each
// datagram it received exactly once, under its role.
func TestReceiveLatencyCountsEveryProbe(t *testing.T) {
	requireTools(t, "sysctl", "ping")
	l := newLab(t)
	atProber, atReflector := inProcess(t, l.prober), inProcess(t, l.reflector)
	requireLatency(t, atProber.(*Collector))
	requireLatency(t, atReflector.(*Collector))
	atReflector.WatchReflector(latReflPort)
	atProber.WatchPort(UDP, latFlowPort)
	refl, err := l.reflector.ListenUDP("udp4", net.JoinHostPort(reflectorAddr, strconv.Itoa(latReflPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer refl.Close()
	flow, err := l.prober.ListenUDP("udp4", net.JoinHostPort(proberAddr, strconv.Itoa(latFlowPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	const n = 200
	to := &net.UDPAddr{IP: net.ParseIP(reflectorAddr), Port: latReflPort}
	buf := make([]byte, 100)
	for i := range n {
		if _, err := flow.WriteToUDP(make([]byte, 44), to); err != nil {
			t.Fatal(err)
		}
		refl.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := refl.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		if _, err := refl.WriteToUDP(buf[:44], from); err != nil {
			t.Fatal(err)
		}
		flow.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := flow.ReadFromUDP(buf); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	for _, side := range []struct {
		name       string
		c          *Collector
		role, idle int
	}{{"prober", atProber.(*Collector), 0, 1}, {"reflector", atReflector.(*Collector), 1, 0}} {
		h, overflows, resyncs, ok := side.c.ReceiveLatency()
		if !ok {
			t.Fatalf("%s: receive latency not measured", side.name)
		}
		for s, stage := range Stages {
			got := &h[side.role][s]
			t.Logf("%s %s: count %d, mean %.1f µs", side.name, stage, got.Count(), float64(got.SumNs)/float64(max(got.Count(), 1))/1e3)
			if got.Count() != n {
				t.Errorf("%s %s counted %d datagrams, want %d", side.name, stage, got.Count(), n)
			}
			if c := h[side.idle][s].Count(); c != 0 {
				t.Errorf("%s: role %s %s counted %d, want 0", side.name, Roles[side.idle], stage, c)
			}
		}
		if overflows != 0 || resyncs != 0 {
			t.Errorf("%s: %d overflows, %d resyncs, want none", side.name, overflows, resyncs)
		}
	}
}

// latBurstPort is the reflector port of the overflow test.
const latBurstPort = 40871

// TestReceiveLatencyOverflow queues a burst of probes on a reflector
// socket that does not read, more than its socket queue's 64 entries, then
// reads them all after queueHold, then answers probes one at a time. The
// first 64 datagrams are paired with their reads; every later one of the
// burst is counted as an overflow and not paired; the probes after the
// burst are paired again, with their own times, not the burst's: the
// socket_queue stage counts what was received less what overflowed, and
// only the 64 datagrams held for queueHold fall above the last bound.
func TestReceiveLatencyOverflow(t *testing.T) {
	requireTools(t, "sysctl", "ping")
	l := newLab(t)
	c := inProcess(t, l.reflector).(*Collector)
	requireLatency(t, c)
	c.WatchReflector(latBurstPort)
	refl, err := l.reflector.ListenUDP("udp4", net.JoinHostPort(reflectorAddr, strconv.Itoa(latBurstPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer refl.Close()
	forceReadBuffer(t, refl, 4<<20) // room for the whole burst: none dropped
	send, err := l.prober.ListenUDP("udp4", proberAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	to := &net.UDPAddr{IP: net.ParseIP(reflectorAddr), Port: latBurstPort}

	const (
		burst     = 200
		fifo      = 64 // FIFO in bpf/hostdrops.c
		after     = 50
		queueHold = 100 * time.Millisecond // above the last bound, 65.536 ms
	)
	for range burst {
		if _, err := send.WriteToUDP(make([]byte, 44), to); err != nil {
			t.Fatal(err)
		}
	}
	// Every datagram of the burst is queued once the stack stage has
	// counted it.
	waitLatency(t, c, func(h *[3]LatencyHistogram, _, _ uint64) error {
		if n := h[1].Count(); n != burst {
			return fmt.Errorf("stack counted %d of %d", n, burst)
		}
		return nil
	})
	time.Sleep(queueHold) // the wait that the socket_queue stage measures
	buf := make([]byte, 100)
	received := 0
	for ; received < burst; received++ {
		refl.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := refl.ReadFromUDP(buf); err != nil {
			t.Fatalf("read %d of the burst: %v", received, err)
		}
	}
	h, overflows, resyncs, _ := c.ReceiveLatency()
	checkLatency(t, "after the burst", h[1], overflows, resyncs, received, received-fifo, fifo)

	// Probes one at a time: paired again, each with its own time.
	for i := range after {
		if _, err := send.WriteToUDP(make([]byte, 44), to); err != nil {
			t.Fatal(err)
		}
		refl.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := refl.ReadFromUDP(buf); err != nil {
			t.Fatalf("probe %d after the burst: %v", i, err)
		}
		received++
	}
	h, overflows, resyncs, _ = c.ReceiveLatency()
	checkLatency(t, "after the probes that followed", h[1], overflows, resyncs, received, burst-fifo, fifo)
}

// requireLatency skips, or fails under CI=true, unless c measures receive
// latency.
func requireLatency(t *testing.T, c *Collector) {
	t.Helper()
	err := c.Err()
	if err == nil {
		err = c.LatencyErr()
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") != "true" {
		t.Skipf("receive latency not measured: %v", err)
	}
	t.Fatalf("receive latency not measured: %v (failing rather than skipping because CI=true)", err)
}

// forceReadBuffer sets conn's receive buffer to n octets, above
// net.core.rmem_max (SO_RCVBUFFORCE, root).
func forceReadBuffer(t *testing.T, conn *net.UDPConn, n int) {
	t.Helper()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v", serr)
	}
}

// waitLatency waits up to 5 s until cond accepts the reflector's stages
// and the event counters.
func waitLatency(t *testing.T, c *Collector, cond func(h *[3]LatencyHistogram, overflows, resyncs uint64) error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, overflows, resyncs, _ := c.ReceiveLatency()
		err := cond(&h[1], overflows, resyncs)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkLatency checks the reflector's stages: backlog and stack counted
// every datagram received, socket_queue those received less the
// overflows, no resync, and exactly held samples above the last bound.
func checkLatency(t *testing.T, when string, h [3]LatencyHistogram, overflows, resyncs uint64, received, wantOverflows, held int) {
	t.Helper()
	for s, stage := range Stages {
		t.Logf("%s: %s count %d, above %.3f ms %d", when, stage, h[s].Count(), LatencyBounds[latencyBounds-1]*1e3, h[s].Buckets[latencyBounds])
	}
	t.Logf("%s: received %d, overflows %d, resyncs %d", when, received, overflows, resyncs)
	for _, s := range []int{0, 1} {
		if n := h[s].Count(); n != uint64(received) {
			t.Errorf("%s: %s counted %d, want the %d received", when, Stages[s], n, received)
		}
	}
	if overflows != uint64(wantOverflows) {
		t.Errorf("%s: %d overflows, want %d", when, overflows, wantOverflows)
	}
	if resyncs != 0 {
		t.Errorf("%s: %d resyncs, want 0", when, resyncs)
	}
	if n := h[2].Count(); n != uint64(received)-overflows {
		t.Errorf("%s: socket_queue counted %d, want %d received less %d overflows", when, n, received, overflows)
	}
	if n := h[2].Buckets[latencyBounds]; n != uint64(held) {
		t.Errorf("%s: socket_queue has %d samples above the last bound, want the %d held in the queue: a read was paired with another datagram's time", when, n, held)
	}
}
