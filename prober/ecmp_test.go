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
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// ecmpLab is a sender S with two equal-cost next hops to a target host D,
// routers R1 and R2, with L4 multipath hashing in S (on veth, a transit
// router would hash by the sending socket, not the 5-tuple). R1
// black-holes the target; D's answers return via R2.
type ecmpLab struct {
	s, r1, r2, d   *netns.NS
	sender, target string
	// broken is R1's address on S's link: `ip route get` names it for the
	// flows that R1 black-holes.
	broken string
}

// newECMPLab builds an ecmpLab on the links 198.18.base+1.0/30 (S-R1),
// base+2 (S-R2), base+3 (R1-D) and base+4 (R2-D), with the sender's and
// the target's addresses on S's and D's loopbacks.
func newECMPLab(t *testing.T, base int, sender, target string) *ecmpLab {
	addr := func(i, host int) string { return fmt.Sprintf("198.18.%d.%d", base+i, host) }
	l := &ecmpLab{s: netns.New(t), r1: netns.New(t), r2: netns.New(t), d: netns.New(t),
		sender: sender, target: target, broken: addr(1, 2)}
	sIf1, _ := netns.Link(t, l.s, addr(1, 1)+"/30", l.r1, addr(1, 2)+"/30")
	sIf2, _ := netns.Link(t, l.s, addr(2, 1)+"/30", l.r2, addr(2, 2)+"/30")
	netns.Link(t, l.r1, addr(3, 1)+"/30", l.d, addr(3, 2)+"/30")
	netns.Link(t, l.r2, addr(4, 1)+"/30", l.d, addr(4, 2)+"/30")
	l.s.Run(t, "ip", "addr", "add", sender+"/32", "dev", "lo")
	l.d.Run(t, "ip", "addr", "add", target+"/32", "dev", "lo")
	for _, ns := range []*netns.NS{l.s, l.r1, l.r2, l.d} {
		ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	}
	l.s.Run(t, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
	l.s.Run(t, "ip", "route", "add", target+"/32",
		"nexthop", "via", addr(1, 2), "dev", sIf1, "nexthop", "via", addr(2, 2), "dev", sIf2)
	l.r1.Run(t, "ip", "route", "add", target+"/32", "via", addr(3, 2))
	l.r2.Run(t, "ip", "route", "add", target+"/32", "via", addr(4, 2))
	l.r1.Run(t, "ip", "route", "add", sender+"/32", "via", addr(1, 1))
	l.r2.Run(t, "ip", "route", "add", sender+"/32", "via", addr(2, 1))
	l.d.Run(t, "ip", "route", "add", sender+"/32", "via", addr(4, 1)) // answers return via R2
	l.r1.Run(t, "ip", "route", "replace", "blackhole", target+"/32")
	return l
}

// TestECMPBlackHoleShowsInExactlyItsFlows builds a sender with two
// equal-cost next hops (routers R1 and R2, L4 multipath hashing) to a
// reflector, black-holes the reflector's address on R1, and checks that
// with flow_metrics the flows that lose everything are exactly those that
// `ip route get … ipproto udp sport P` sends via R1, that the others lose
// nothing, and that the total loss ratio is the share of broken flows.
func TestECMPBlackHoleShowsInExactlyItsFlows(t *testing.T) {
	netns.Require(t)
	lab := newECMPLab(t, 0, "198.18.20.1", "198.18.10.1")
	s, d, sender, target := lab.s, lab.d, lab.sender, lab.target

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
		broken[i] = strings.Contains(string(out), "via "+lab.broken)
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
	testlab.WaitFor(t, 60*time.Second, "100 decided probes per flow", func() bool {
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
