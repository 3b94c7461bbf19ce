//go:build linux && !llama_portable

package prober

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/hostdrops"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// Addresses of the host-drop lab: a prober and a host with two reflector
// addresses, so that two sessions of one module share its flow sockets.
const (
	dropProber = "198.18.41.1"
	dropReflA  = "198.18.41.2"
	dropReflB  = "198.18.41.3"
)

// TestSessionHostDrops drops the replies of one of two sessions of a
// module at the prober's host with iptables and checks that the session
// counts exactly the drops that the rule counted, by reason, that the
// other session, which shares its flow sockets, counts none, and that
// without the collector the series is absent.
func TestSessionHostDrops(t *testing.T) {
	netns.Require(t)
	testlab.RequireTool(t, "iptables")
	pr, rf := netns.New(t), netns.New(t)
	_, rfIf := netns.Link(t, pr, dropProber+"/29", rf, dropReflA+"/29")
	rf.Run(t, "ip", "addr", "add", dropReflB+"/29", "dev", rfIf)
	for _, a := range []string{dropReflA, dropReflB} {
		pr.Run(t, "ping", "-c", "1", "-W", "2", a) // resolves the neighbours
		if err := rf.Do(func() error {
			r, err := reflector.New(reflector.Config{ListenAddresses: []string{a + ":862"}}, nil, discard)
			if err != nil {
				return err
			}
			r.Serve()
			t.Cleanup(func() { r.Close() })
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var c *hostdrops.Collector
	if err := pr.Do(func() error { c = hostdrops.New(); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Err(); err != nil {
		testlab.SkipOrFail(t, "collector did not start: %v", err)
	}
	mgr := NewManager(Options{Ports: c}, nil, discard)
	defer mgr.Close()
	off := NewManager(Options{Ports: &hostdrops.Collector{}}, nil, discard) // --collector.host-drops not given
	m := fastModule()
	m.Flows = 2
	get := func(mgr *Manager, target string) *Session {
		var s *Session
		if err := pr.Do(func() (err error) {
			s, _, err = mgr.Get(context.Background(), "stamp", m, target)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, aOff := get(mgr, dropReflA+":862"), get(mgr, dropReflB+":862"), get(off, dropReflA+":862")
	testlab.WaitFor(t, 10*time.Second, "replies to every session", func() bool {
		return a.Snapshot().Received > 20 && b.Snapshot().Received > 20 && aOff.Snapshot().Received > 20
	})
	if mf := exposed(t, aOff, aOff.Snapshot())["llama_probe_packets_dropped_by_host_total"]; mf != nil {
		t.Errorf("without the collector /probe exposes %v, want the series absent", mf)
	}
	off.Close() // its replies would be dropped by the rule too, uncounted

	rule := []string{"INPUT", "-s", dropReflA, "-p", "udp", "--sport", "862", "-j", "DROP"}
	pr.Run(t, append([]string{"iptables", "-w", "-I"}, rule...)...)
	lostBefore := a.Snapshot().Lost
	testlab.WaitFor(t, 20*time.Second, "200 lost probes", func() bool { return a.Snapshot().Lost-lostBefore >= 200 })
	// An ACCEPT above the DROP ends the drops, leaving its count to read.
	accept := append(slices.Clone(rule[:len(rule)-1]), "ACCEPT")
	pr.Run(t, append([]string{"iptables", "-w", "-I"}, accept...)...)
	dropped := droppedBy(t, pr, dropReflA)
	pr.Run(t, append([]string{"iptables", "-w", "-D"}, rule...)...)
	pr.Run(t, append([]string{"iptables", "-w", "-D"}, accept...)...)
	var got map[string]uint64
	testlab.WaitFor(t, 5*time.Second, "the session's count to reach the rule's", func() bool {
		got = a.hostDrops()
		return got["netfilter_drop"] >= dropped
	})
	// The last probes dropped are decided lost a timeout later.
	var sn Snapshot
	testlab.WaitFor(t, 5*time.Second, "every dropped reply's probe decided lost", func() bool {
		sn = a.Snapshot()
		return sn.Lost-lostBefore >= dropped
	})
	t.Logf("iptables dropped %d replies; the session counts %v, lost %d (%d before the rule)", dropped, got, sn.Lost, lostBefore)
	if len(got) != 1 || got["netfilter_drop"] != dropped {
		t.Errorf("session counts host drops %v, want netfilter_drop=%d only", got, dropped)
	}
	if sn.Lost-lostBefore < dropped {
		t.Errorf("%d probes lost since the rule, fewer than the %d replies dropped", sn.Lost-lostBefore, dropped)
	}
	mf := exposed(t, a, sn)["llama_probe_packets_dropped_by_host_total"]
	if mf == nil || len(mf.Metric) != 1 || mf.Metric[0].GetCounter().GetValue() != float64(dropped) || labels(mf)["reason"] != "netfilter_drop" {
		t.Errorf("/probe exposes %v, want llama_probe_packets_dropped_by_host_total{reason=\"netfilter_drop\"} %d", mf, dropped)
	}
	if line, want := hostDropsLine(a), "netfilter_drop="+strconv.FormatUint(dropped, 10); !strings.Contains(line, want) {
		t.Errorf("debug page line %q lacks %s", line, want)
	}
	if d := b.hostDrops(); d == nil || len(d) != 0 {
		t.Errorf("the other session of the module counts %v, want none (an empty count)", d)
	}
}

// droppedBy returns the packets counted by the DROP rule of ns's INPUT
// chain that matches replies from src.
func droppedBy(t *testing.T, ns *netns.NS, src string) uint64 {
	t.Helper()
	out, err := ns.Command("iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, src) && strings.Contains(line, "DROP") {
			n, err := strconv.ParseUint(strings.Fields(line)[0], 10, 64)
			if err != nil {
				t.Fatalf("iptables rule line %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}
