//go:build linux && !llama_portable

package prober

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/icmpsock"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// The icmp prober's tests with real sockets, in network namespaces.

// icmpModule returns a valid icmp module that probes every 5ms. Its 3s
// timeout is for a loaded machine, where a receive loop can stall for
// Addresses of icmpHosts' link: a prober and a plain host, which answers
// echo requests from its kernel. IPv6 uses the benchmarking range
// 2001:2::/48 (RFC 5180) as IPv4 uses 198.18.0.0/15 (RFC 2544).
const (
	icmpProber4, icmpHost4 = "198.18.30.1", "198.18.30.2"
	icmpProber6, icmpHost6 = "2001:2:0:30::1", "2001:2:0:30::2"
)

// icmpHosts links a prober namespace to a host namespace that runs no
// reflector. With ping, the prober's namespace lets every group open ping
// sockets; otherwise it keeps the kernel's default ("1 0": none), and only
// raw sockets are possible.
func icmpHosts(t *testing.T, ping bool) (prober, host *netns.NS) {
	t.Helper()
	prober, host = netns.New(t), netns.New(t)
	pIf, hIf := netns.Link(t, prober, icmpProber4+"/30", host, icmpHost4+"/30")
	prober.Run(t, "ip", "addr", "add", icmpProber6+"/64", "dev", pIf, "nodad")
	host.Run(t, "ip", "addr", "add", icmpHost6+"/64", "dev", hIf, "nodad")
	// Neighbours known in advance: the first probes do not wait for ARP or
	// neighbour discovery, which a fresh link can take over a second to
	// finish.
	pMAC, hMAC := linkAddr(t, prober, pIf), linkAddr(t, host, hIf)
	for _, a := range []string{icmpHost4, icmpHost6} {
		prober.Run(t, "ip", "neigh", "replace", a, "lladdr", hMAC, "dev", pIf, "nud", "permanent")
	}
	for _, a := range []string{icmpProber4, icmpProber6} {
		host.Run(t, "ip", "neigh", "replace", a, "lladdr", pMAC, "dev", hIf, "nud", "permanent")
	}
	if ping {
		prober.Run(t, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
	}
	return prober, host
}

// linkAddr returns the MAC address of interface ifc of ns.
func linkAddr(t *testing.T, ns *netns.NS, ifc string) string {
	t.Helper()
	var mac string
	if err := ns.Do(func() error {
		i, err := net.InterfaceByName(ifc)
		if err == nil {
			mac = i.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// icmpSession starts the session of target in ns, whose sockets are
// opened there.
func icmpSession(t *testing.T, ns *netns.NS, mgr *Manager, m *config.Module, target string) *Session {
	t.Helper()
	var s *Session
	if err := ns.Do(func() (err error) {
		s, _, err = mgr.Get(context.Background(), config.ProberICMP, m, target)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// socketKind returns the kind of the session's flow sockets.
func socketKind(t *testing.T, s *Session) icmpsock.Kind {
	t.Helper()
	cs, err := s.pool.sockets(family(s.Dst().Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return cs[0].FlowSocket.(icmpsock.Conn).Kind()
}

// TestICMPSessions probes a host without a reflector over ICMP and ICMPv6
// echo, from ping sockets and from raw sockets: nothing is lost, RTTs are
// positive and kernel-timestamped, and the /probe answer has the window
// and histogram series but no dwell, direction, hop or remarking ones.
func TestICMPSessions(t *testing.T) {
	for _, kind := range []icmpsock.Kind{icmpsock.Ping, icmpsock.Raw} {
		for _, target := range []string{icmpHost4, icmpHost6} {
			t.Run(fmt.Sprintf("%s/%s", kind, target), func(t *testing.T) {
				prober, _ := icmpHosts(t, kind == icmpsock.Ping)
				mgr := NewManager(Options{}, nil, discard)
				defer mgr.Close()
				m := icmpModule(t)
				s := icmpSession(t, prober, mgr, m, target)
				if got := socketKind(t, s); got != kind {
					t.Fatalf("flow sockets are %s sockets, want %s", got, kind)
				}
				var sn Snapshot
				testlab.WaitFor(t, 30*time.Second, "100 decided probes", func() bool {
					sn = s.Snapshot()
					return sn.WindowSent >= 100
				})
				t.Logf("window %d sent, %d lost; RTT min %.1fµs p50 %.1fµs; kernel timestamps %v (fallbacks %d); late %d, reordered %d",
					sn.WindowSent, sn.WindowLost, sn.RTTMin*1e6, sn.Quantiles[0.5]*1e6, sn.KernelTimestamps, sn.TimestampFallbacks, sn.Late, sn.Reordered)
				if sn.WindowLost != 0 || sn.LossRatio != 0 {
					t.Errorf("window lost %d (ratio %v), want 0", sn.WindowLost, sn.LossRatio)
				}
				if !(sn.RTTMin > 0) || sn.RTTCount != sn.WindowSent {
					t.Errorf("RTT min %v over %d of %d probes, want > 0 over all", sn.RTTMin, sn.RTTCount, sn.WindowSent)
				}
				if !sn.KernelTimestamps {
					t.Errorf("RTTs are not kernel-timestamped (%d fallbacks)", sn.TimestampFallbacks)
				}
				if sn.Duplicated != 0 {
					t.Errorf("%d duplicates, want none: each reply is read by its flow's socket alone", sn.Duplicated)
				}
				checkICMPExposition(t, mgr, m, target)
			})
		}
	}
}

// checkICMPExposition scrapes the icmp session of target and checks which
// series it has.
func checkICMPExposition(t *testing.T, mgr *Manager, m *config.Module, target string) {
	t.Helper()
	cfg := &config.Config{Modules: map[string]*config.Module{config.ProberICMP: m}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/probe?module=icmp&target="+target, nil))
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, body)
	}
	for _, name := range []string{"probe_success 1", "llama_probe_rtt_seconds_bucket", "llama_probe_window_loss_ratio 0",
		"llama_probe_window_rtt_seconds{quantile=", "llama_probe_packets_reordered_total", "llama_probe_packets_duplicated_total",
		`prober="icmp"`, `timestamps="kernel"`, `dst_port=""`} {
		if !strings.Contains(body, name) {
			t.Errorf("/probe lacks %s", name)
		}
	}
	for _, name := range []string{"llama_probe_reflector_dwell_seconds", "forward_lost", "backward_lost", "forward_loss_ratio",
		"backward_loss_ratio", "llama_probe_forward_hops", "llama_probe_dscp_remarked_total"} {
		if strings.Contains(body, name) {
			t.Errorf("/probe has %s, which icmp cannot know", name)
		}
	}
}

// TestICMPLossFromDroppedRequests drops 10% of the echo requests at
// random where the host receives them: over 2000 probes the window loss
// ratio is 0.10 ± 0.03.
func TestICMPLossFromDroppedRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ~12 s of probing")
	}
	prober, host := icmpHosts(t, true)
	host.Run(t, "iptables", "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request",
		"-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := icmpModule(t)
	m.Window = 30 * time.Second
	s := icmpSession(t, prober, mgr, m, icmpHost4)
	var sn Snapshot
	testlab.WaitFor(t, 90*time.Second, "2000 decided probes", func() bool {
		sn = s.Snapshot()
		return sn.WindowSent >= 2000
	})
	t.Logf("window %d sent, %d lost: ratio %.4f", sn.WindowSent, sn.WindowLost, sn.LossRatio)
	if math.Abs(sn.LossRatio-0.10) > 0.03 {
		t.Errorf("window loss ratio %.4f, want 0.10 ± 0.03", sn.LossRatio)
	}
	if sn.Sent != sn.Received+sn.Lost+uint64(sn.InFlight) || sn.Late != 0 || sn.Duplicated != 0 {
		t.Errorf("sent %d, received %d, lost %d, in flight %d, late %d, duplicated %d",
			sn.Sent, sn.Received, sn.Lost, sn.InFlight, sn.Late, sn.Duplicated)
	}
}

// TestICMPWithoutSocketsAnswers500 opens an icmp session from a thread
// that may open neither kind of socket (the namespace's default
// ping_group_range excludes every group, and the thread gives up
// CAP_NET_RAW): /probe answers 500 with what is missing, not
// probe_success 0.
func TestICMPWithoutSocketsAnswers500(t *testing.T) {
	prober, _ := icmpHosts(t, false)
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := icmpModule(t)
	cfg := &config.Config{Modules: map[string]*config.Module{config.ProberICMP: m}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	w := httptest.NewRecorder()
	done := make(chan error)
	go func() {
		done <- prober.Do(func() error {
			// The thread stays locked to this goroutine, which ends with
			// it, so that no other goroutine runs without CAP_NET_RAW.
			runtime.LockOSThread()
			if err := dropEffectiveCap(unix.CAP_NET_RAW); err != nil {
				return err
			}
			h.ServeHTTP(w, httptest.NewRequest("GET", "/probe?module=icmp&target="+icmpHost4, nil))
			return nil
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	body := strings.TrimSpace(w.Body.String())
	t.Logf("status %d: %s", w.Code, body)
	if w.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", w.Code)
	}
	for _, want := range []string{`net.ipv4.ping_group_range "1 0" excludes gid 0`, "CAP_NET_RAW"} {
		if !strings.Contains(body, want) {
			t.Errorf("answer %q does not say %q", body, want)
		}
	}
	if strings.Contains(body, "\n") {
		t.Errorf("answer %q is not one line", body)
	}
	if n := len(mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions started, want none", n)
	}
}

// dropEffectiveCap removes capability c from the calling thread's
// effective set (capset(2) changes one thread).
func dropEffectiveCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[c/32].Effective &^= 1 << (c % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// TestICMPTargetNamesNoPort: an icmp target is a host alone; one with a
// echoReply turns echo request req into the reply a host sends back from a
// TestICMPDecode: an echo reply to our probe decodes to its SSID and
// sequence number when it came back on its flow's socket; other ICMP
// messages, other pings' replies and replies on another flow are strays,
