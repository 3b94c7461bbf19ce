//go:build linux

package prober

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/netns"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// TestECMPBlackHoleShowsInExactlyItsFlows builds a sender with two
// equal-cost next hops (routers R1 and R2, L4 multipath hashing) to a
// reflector, black-holes the reflector's address on R1, and checks that
// with flow_metrics the flows that lose everything are exactly those that
// `ip route get … ipproto udp sport P` sends via R1, that the others lose
// nothing, and that the total loss ratio is the share of broken flows.
func TestECMPBlackHoleShowsInExactlyItsFlows(t *testing.T) {
	netns.Require(t)
	s, r1, r2, d := netns.New(t), netns.New(t), netns.New(t), netns.New(t)
	sIf1, _ := netns.Link(t, s, "198.18.1.1/30", r1, "198.18.1.2/30")
	sIf2, _ := netns.Link(t, s, "198.18.2.1/30", r2, "198.18.2.2/30")
	netns.Link(t, r1, "198.18.3.1/30", d, "198.18.3.2/30")
	netns.Link(t, r2, "198.18.4.1/30", d, "198.18.4.2/30")
	const sender, target = "198.18.20.1", "198.18.10.1"
	s.Run(t, "ip", "addr", "add", sender+"/32", "dev", "lo")
	d.Run(t, "ip", "addr", "add", target+"/32", "dev", "lo")
	for _, ns := range []*netns.NS{s, r1, r2, d} {
		ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	}
	s.Run(t, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
	s.Run(t, "ip", "route", "add", target+"/32",
		"nexthop", "via", "198.18.1.2", "dev", sIf1, "nexthop", "via", "198.18.2.2", "dev", sIf2)
	r1.Run(t, "ip", "route", "add", target+"/32", "via", "198.18.3.2")
	r2.Run(t, "ip", "route", "add", target+"/32", "via", "198.18.4.2")
	r1.Run(t, "ip", "route", "add", sender+"/32", "via", "198.18.1.1")
	r2.Run(t, "ip", "route", "add", sender+"/32", "via", "198.18.2.1")
	d.Run(t, "ip", "route", "add", sender+"/32", "via", "198.18.4.1") // replies return via R2
	r1.Run(t, "ip", "route", "replace", "blackhole", target+"/32")

	err := d.Do(func() error {
		refl, err := reflector.New(reflector.Config{ListenAddresses: []string{target + ":862"}}, nil, discard)
		if err != nil {
			return err
		}
		refl.Serve()
		t.Cleanup(func() { refl.Close() })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	const firstPort, flows = 40000, 8
	m := fastModule()
	m.Interval, m.Flows, m.FlowMetrics = 5*time.Millisecond, flows, true
	m.SourcePorts = [2]uint16{firstPort, firstPort + flows - 1}
	m.SourceIP = netip.MustParseAddr(sender)
	broken := map[int]bool{}
	for i := range flows {
		out, err := s.Command("ip", "route", "get", target, "from", sender, "ipproto", "udp",
			"sport", fmt.Sprint(firstPort+i), "dport", "862").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route get: %v: %s", err, out)
		}
		broken[i] = strings.Contains(string(out), "via 198.18.1.2")
	}

	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	var sess *Session
	if err := s.Do(func() (err error) {
		sess, _, err = mgr.Get(context.Background(), "ecmp", m, target)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var sn Snapshot
	waitFor(t, 60*time.Second, "100 decided probes per flow", func() bool {
		sn = sess.Snapshot()
		return sn.WindowSent >= 100*flows
	})
	nBroken := 0
	for i := range flows {
		lossy := sn.FlowWindowLost[i] == sn.FlowWindowSent[i]
		clean := sn.FlowWindowLost[i] == 0
		t.Logf("flow %d (sport %d): via R1 %v, window lost %d of %d", i, firstPort+i, broken[i], sn.FlowWindowLost[i], sn.FlowWindowSent[i])
		if broken[i] && !lossy || !broken[i] && !clean {
			t.Errorf("flow sport %d: via R1 %v but lost %d of %d", firstPort+i, broken[i], sn.FlowWindowLost[i], sn.FlowWindowSent[i])
		}
		if broken[i] {
			nBroken++
		}
	}
	share := float64(nBroken) / flows
	if math.Abs(sn.LossRatio-share) > 0.05 {
		t.Errorf("window loss ratio %.3f, want the broken share %.3f ± 0.05", sn.LossRatio, share)
	}
	// The per-flow series carry the source port as their flow label.
	if got := sess.pool.flowPort(sn.Dst.Addr(), 3); got != firstPort+3 {
		t.Errorf("flow 3 label %d, want %d", got, firstPort+3)
	}
	_ = config.DefaultModule
}
