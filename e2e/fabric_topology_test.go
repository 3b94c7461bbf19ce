//go:build linux

package e2e

import (
	"strings"
	"testing"
)

// TestFabricTopology builds the simulated fabric of TestFabric (2 spines,
// 4 leaves, 3 hosts each; newFabric checks its ECMP plan with `ip route
// get`), and checks that every host reaches a host of every other leaf over
// the fabric and the management network reaches every host, that a hop
// answers from the interface the probe came in on, and that a link fault
// drops what crosses the link and is removed.
func TestFabricTopology(t *testing.T) {
	f := newFabric(t, 2, 4, 3)
	src := f.hosts[0]
	for _, dst := range f.hosts[1:] {
		src.ns.Run(t, "ping", "-q", "-c", "1", "-W", "2", dst.fabric)
	}
	for _, h := range f.hosts {
		f.mgmt.Run(t, "ping", "-q", "-c", "1", "-W", "2", h.mgmt)
	}
	// TTL 3 from leaf1's host to leaf2's expires at leaf2, which answers
	// from its uplink to the spine the probe came through.
	dst := f.hostsOf(2)[0]
	out, _ := src.ns.Command("ping", "-c", "1", "-W", "2", "-t", "2", dst.fabric).CombinedOutput()
	if !strings.Contains(string(out), "Time to live exceeded") {
		t.Fatalf("ping -t 2 %s: want Time to live exceeded from a spine, got\n%s", dst.fabric, out)
	}
	t.Logf("ping -t 2: %s", out)

	fault := &linkFault{link: f.links["leaf1>"+src.name], p: 1}
	fault.set(t, true)
	if out, err := src.ns.Command("ping", "-q", "-c", "1", "-W", "1", dst.fabric).CombinedOutput(); err == nil {
		t.Fatalf("ping across the black-holed link %v answered:\n%s", fault.link, out)
	}
	fault.set(t, false)
	src.ns.Run(t, "ping", "-q", "-c", "1", "-W", "2", dst.fabric)
}
