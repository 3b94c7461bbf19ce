//go:build linux

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// The simulated fabric: a two-tier Clos (leaf-spine) network built of
// network namespaces, for the fleet tests of fabric_test.go.
//
//	spine1 .. spineS          routers, one link to every leaf
//	leaf1 .. leafL            routers, one link to every spine and to each of their hosts
//	leafN-hM                  hosts: one exporter each, one link to their leaf
//	mgmt                      Prometheus and Alertmanager, a bridge to every host
//
// Addresses (all in 198.18.0.0/15), every link a /31:
//
//	spine s - leaf l    198.18.s.2(l-1) on the spine, .2(l-1)+1 on the leaf
//	leaf l - host h     198.18.(100+l).2(h-1) on the leaf, .2(h-1)+1 on the host
//	management          198.19.255.1 in mgmt, 198.19.255.(10+i) on host i
//
// Interfaces are named as on a switch: spine s reaches leaf l on swp<l>;
// leaf l reaches its host h on swp<h> and spine s on swp5<s>; hosts have
// eth0 on the fabric and mgmt0 on the management network.
//
// Routers forward, keep Linux's default ICMP rate limits, and answer ICMP
// errors from the interface the packet arrived on
// (net.ipv4.icmp_errors_use_inbound_ifaddr=1; Linux's default is the
// address of the interface towards the sender), so that the address a hop
// answers from names the link the probe came in on.
//
// ECMP. Each leaf spreads the traffic for other leaves over every spine.
// The split cannot be a multipath route hashed on the 5-tuple and still be
// predictable for every pair: the hash seed is random per namespace, and 8
// flows of one pair land on one spine with probability 2^-7, which over
// 264 pair directions happens about twice a run. So each leaf routes a
// probe flow by its port, with policy rules (ip rule ... ipproto udp
// sport|dport P table T), as a hash function fixed by the test would:
//
//	probes leaving leaf l (source port 40000+f)        via spine ((f + l) mod S) + 1
//	replies leaving leaf l (destination port 40000+f)  via spine ((f/S + l) mod S) + 1
//
// With two spines, each pair's 8 flows take every (forward spine, backward
// spine) combination twice, so a one-direction fault on a spine link hits
// the forward path of some flows and the backward path of others, never
// all of a pair's flows. Traffic that is not a probe flow (ICMP errors)
// follows a multipath route hashed on addresses, as a fabric would; its
// path is not predicted. newFabric checks the plan with `ip route get`
// from each leaf, as the leaf would forward.

const (
	fabricFirstPort = 40000 // the fabric module's source_port_range starts here
	fabricFlows     = 8     // and has this many ports
	reflectorPort   = 862
	mgmtAddr        = "198.19.255.1"
	mgmtPrefix      = 24
	spineTable      = 100 // routing table of spine s: spineTable + s
)

// fabricRouter is a spine or a leaf.
type fabricRouter struct {
	name   string // spine1, leaf2
	ns     *netns.NS
	router bool // false for the host end of a host's link
}

// fabricHost is a host: one exporter, its reflector on the fabric and its
// web server on the management network.
type fabricHost struct {
	name     string // leaf2-h3
	index    int    // 0-based, over all hosts
	leaf     int    // 1-based
	ns       *netns.NS
	fabric   string // address on eth0: the reflector's, and the probes' source
	mgmt     string // address on mgmt0: the exporter's web server
	leafAddr string // the leaf's address on this host's link: the next hop
}

// fabricLink is one direction of a link: packets sent by device from
// (interface fromIf, address fromAddr) and received by device to.
type fabricLink struct {
	from, fromIf, fromAddr string
	to, toIf, toAddr       string
	// toNS is the receiving device's namespace, where a fault on this
	// direction drops packets as they arrive on toIf.
	toNS *netns.NS
	// fromHost and toHost tell a host's end from a router's.
	fromHost, toHost bool
}

func (l *fabricLink) String() string {
	return fmt.Sprintf("%s:%s -> %s:%s (to %s)", l.from, l.fromIf, l.to, l.toIf, l.toAddr)
}

// name is the link as llama-filesd's devices rules name it: NEAR -> FAR,
// each device:interface, a host by its name alone.
func (l *fabricLink) name() string {
	end := func(dev, ifc string, host bool) string {
		if host {
			return dev
		}
		return dev + ":" + ifc
	}
	return end(l.from, l.fromIf, l.fromHost) + " -> " + end(l.to, l.toIf, l.toHost)
}

// fabric is a built topology.
type fabric struct {
	spines, leaves []*fabricRouter
	hosts          []*fabricHost
	mgmt           *netns.NS
	// links holds both directions of every link, keyed "from>to" with
	// device names (spine1>leaf2, leaf2>leaf2-h1).
	links map[string]*fabricLink
	// devices maps every router and host interface address to
	// "device:interface", for logs.
	devices map[string]string
	// interfaces holds, per router, its interfaces' addresses with their
	// prefix ("198.18.1.3/31"): the devices map of llama-filesd's hosts
	// file.
	interfaces map[string]map[string]string
}

// fabricSpine returns the 0-based spine that leaf l (1-based) sends flow f
// through, forward (the flow's probes) or backward (the replies).
func fabricSpine(spines, leaf, flow int, backward bool) int {
	if backward {
		return (flow/spines + leaf) % spines
	}
	return (flow + leaf) % spines
}

// newFabric builds spines x leaves x hostsPerLeaf and registers its removal
// at cleanup (with the namespaces).
func newFabric(t *testing.T, spines, leaves, hostsPerLeaf int) *fabric {
	t.Helper()
	netns.Require(t)
	if spines > 9 || leaves > 99 || hostsPerLeaf > 49 || spines*leaves > 120 {
		t.Fatalf("fabric %dx%dx%d does not fit the address plan", spines, leaves, hostsPerLeaf)
	}
	f := &fabric{links: map[string]*fabricLink{}, devices: map[string]string{}, interfaces: map[string]map[string]string{}}
	f.mgmt = fabricNS(t, false)
	f.mgmt.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	f.mgmt.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", mgmtAddr, mgmtPrefix), "dev", "br0")
	f.mgmt.Run(t, "ip", "link", "set", "br0", "up")
	for s := 1; s <= spines; s++ {
		f.spines = append(f.spines, &fabricRouter{name: fmt.Sprintf("spine%d", s), ns: fabricNS(t, true), router: true})
	}
	for l := 1; l <= leaves; l++ {
		leaf := &fabricRouter{name: fmt.Sprintf("leaf%d", l), ns: fabricNS(t, true), router: true}
		f.leaves = append(f.leaves, leaf)
		for s, spine := range f.spines {
			n := 2 * (l - 1)
			f.link(t, spine, fmt.Sprintf("swp%d", l), fmt.Sprintf("198.18.%d.%d", s+1, n),
				leaf, fmt.Sprintf("swp5%d", s+1), fmt.Sprintf("198.18.%d.%d", s+1, n+1))
		}
		for h := 1; h <= hostsPerLeaf; h++ {
			f.addHost(t, leaf, l, h)
		}
	}
	f.route(t)
	f.checkPlan(t)
	return f
}

// fabricNS creates a namespace with reverse path filtering off (paths are
// asymmetric) before any interface exists, and forwarding on for routers.
func fabricNS(t *testing.T, router bool) *netns.NS {
	t.Helper()
	ns := netns.New(t)
	sysctls := []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"}
	if router {
		sysctls = append(sysctls, "net.ipv4.ip_forward=1", "net.ipv4.icmp_errors_use_inbound_ifaddr=1")
	}
	ns.Run(t, append([]string{"sysctl", "-qw"}, sysctls...)...)
	return ns
}

// link connects a and b with a veth pair named aIf and bIf in their
// namespaces, each end with its address as a /31, and records both
// directions and both addresses.
func (f *fabric) link(t *testing.T, a *fabricRouter, aIf, aAddr string, b *fabricRouter, bIf, bAddr string) {
	t.Helper()
	out, err := exec.Command("ip", "link", "add", aIf, "netns", a.ns.Name, "type", "veth", "peer", "name", bIf, "netns", b.ns.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link add %s (%s) - %s (%s): %v: %s", aIf, a.name, bIf, b.name, err, out)
	}
	for _, end := range []struct {
		r         *fabricRouter
		ifc, addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		end.r.ns.Run(t, "ip", "addr", "add", end.addr+"/31", "dev", end.ifc)
		end.r.ns.Run(t, "ip", "link", "set", end.ifc, "up")
		f.devices[end.addr] = end.r.name + ":" + end.ifc
		if end.r.router {
			if f.interfaces[end.r.name] == nil {
				f.interfaces[end.r.name] = map[string]string{}
			}
			f.interfaces[end.r.name][end.ifc] = end.addr + "/31"
		}
	}
	f.links[a.name+">"+b.name] = &fabricLink{a.name, aIf, aAddr, b.name, bIf, bAddr, b.ns, !a.router, !b.router}
	f.links[b.name+">"+a.name] = &fabricLink{b.name, bIf, bAddr, a.name, aIf, aAddr, a.ns, !b.router, !a.router}
}

// addHost creates host h (1-based) of leaf l, links it to the leaf and to
// the management bridge.
func (f *fabric) addHost(t *testing.T, leaf *fabricRouter, l, h int) {
	t.Helper()
	i := len(f.hosts)
	host := &fabricHost{
		name:     fmt.Sprintf("%s-h%d", leaf.name, h),
		index:    i,
		leaf:     l,
		ns:       fabricNS(t, false),
		fabric:   fmt.Sprintf("198.18.%d.%d", 100+l, 2*(h-1)+1),
		mgmt:     fmt.Sprintf("198.19.255.%d", 10+i),
		leafAddr: fmt.Sprintf("198.18.%d.%d", 100+l, 2*(h-1)),
	}
	if i+10 > 254 {
		t.Fatalf("%d hosts do not fit the management /24", i+1)
	}
	f.hosts = append(f.hosts, host)
	f.link(t, leaf, fmt.Sprintf("swp%d", h), host.leafAddr, &fabricRouter{name: host.name, ns: host.ns}, "eth0", host.fabric)
	port := fmt.Sprintf("h%d", i)
	out, err := exec.Command("ip", "link", "add", port, "netns", f.mgmt.Name, "type", "veth", "peer", "name", "mgmt0", "netns", host.ns.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link add %s (mgmt) - mgmt0 (%s): %v: %s", port, host.name, err, out)
	}
	f.mgmt.Run(t, "ip", "link", "set", port, "master", "br0", "up")
	host.ns.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", host.mgmt, mgmtPrefix), "dev", "mgmt0")
	host.ns.Run(t, "ip", "link", "set", "mgmt0", "up")
	// The fabric is 198.18.0.0/16; the management /24 stays on mgmt0.
	host.ns.Run(t, "ip", "route", "add", "198.18.0.0/16", "via", host.leafAddr, "dev", "eth0")
}

// leafSubnet is the /24 of leaf l's host links.
func leafSubnet(l int) string { return fmt.Sprintf("198.18.%d.0/24", 100+l) }

// spineAddr returns spine s's (0-based) address on its link to leaf l
// (1-based), and leafUplinkAddr the leaf's end.
func spineAddr(s, l int) string      { return fmt.Sprintf("198.18.%d.%d", s+1, 2*(l-1)) }
func leafUplinkAddr(s, l int) string { return fmt.Sprintf("198.18.%d.%d", s+1, 2*(l-1)+1) }

// route installs the routes: spines reach each leaf's hosts through it;
// leaves reach other leaves' hosts through a multipath route over every
// spine (for traffic that is not a probe flow) and, for probe flows, through
// one table per spine chosen by the flow's port (fabricSpine).
func (f *fabric) route(t *testing.T) {
	t.Helper()
	for s, spine := range f.spines {
		var batch []string
		for l := 1; l <= len(f.leaves); l++ {
			batch = append(batch, fmt.Sprintf("route add %s via %s dev swp%d", leafSubnet(l), leafUplinkAddr(s, l), l))
		}
		ipBatch(t, spine.ns, batch)
	}
	for li, leaf := range f.leaves {
		l := li + 1
		var batch []string
		for m := 1; m <= len(f.leaves); m++ {
			if m == l {
				continue
			}
			multi := "route add " + leafSubnet(m)
			for s := range f.spines {
				multi += fmt.Sprintf(" nexthop via %s dev swp5%d", spineAddr(s, l), s+1)
				batch = append(batch, fmt.Sprintf("route add %s via %s dev swp5%d table %d", leafSubnet(m), spineAddr(s, l), s+1, spineTable+s))
			}
			batch = append(batch, multi)
		}
		for fl := range fabricFlows {
			port := fabricFirstPort + fl
			batch = append(batch,
				fmt.Sprintf("rule add pref %d ipproto udp sport %d table %d", 1000+fl, port, spineTable+fabricSpine(len(f.spines), l, fl, false)),
				fmt.Sprintf("rule add pref %d ipproto udp dport %d table %d", 1100+fl, port, spineTable+fabricSpine(len(f.spines), l, fl, true)))
		}
		ipBatch(t, leaf.ns, batch)
	}
}

// ipBatch runs `ip -batch -` in ns with the given commands.
func ipBatch(t *testing.T, ns *netns.NS, cmds []string) string {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s -batch: %v: %s\n--- commands ---\n%s", ns.Name, err, out, strings.Join(cmds, "\n"))
	}
	return string(out)
}

// checkPlan asks each leaf, with `ip route get ... iif`, how it forwards
// every flow from its first host to the first host of every other leaf and
// the replies back, and fails unless that is fabricSpine's plan.
func (f *fabric) checkPlan(t *testing.T) {
	t.Helper()
	for li, leaf := range f.leaves {
		l := li + 1
		src := f.hostsOf(l)[0]
		var cmds, want []string
		for m := 1; m <= len(f.leaves); m++ {
			if m == l {
				continue
			}
			dst := f.hostsOf(m)[0]
			for fl := range fabricFlows {
				port := fabricFirstPort + fl
				// A probe from src's flow leaving leaf l, and a reply to
				// dst's flow (dst's probes to src's reflector) leaving it.
				cmds = append(cmds,
					fmt.Sprintf("route get %s from %s iif swp1 ipproto udp sport %d dport %d", dst.fabric, src.fabric, port, reflectorPort),
					fmt.Sprintf("route get %s from %s iif swp1 ipproto udp sport %d dport %d", dst.fabric, src.fabric, reflectorPort, port))
				want = append(want,
					"via "+spineAddr(fabricSpine(len(f.spines), l, fl, false), l)+" ",
					"via "+spineAddr(fabricSpine(len(f.spines), l, fl, true), l)+" ")
			}
		}
		out := ipBatch(t, leaf.ns, cmds)
		var got []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "198.18.") {
				got = append(got, line)
			}
		}
		if len(got) != len(cmds) {
			t.Fatalf("%s: %d answers to %d route queries:\n%s", leaf.name, len(got), len(cmds), out)
		}
		for i := range cmds {
			if !strings.Contains(got[i]+" ", want[i]) {
				t.Fatalf("%s: %s: got %q, want %q (the ECMP plan)", leaf.name, cmds[i], got[i], want[i])
			}
		}
	}
}

// hostsOf returns the hosts of leaf l (1-based).
func (f *fabric) hostsOf(l int) []*fabricHost {
	var out []*fabricHost
	for _, h := range f.hosts {
		if h.leaf == l {
			out = append(out, h)
		}
	}
	return out
}

// host returns the host named name.
func (f *fabric) host(t *testing.T, name string) *fabricHost {
	t.Helper()
	for _, h := range f.hosts {
		if h.name == name {
			return h
		}
	}
	t.Fatalf("fabric has no host %s", name)
	return nil
}

// linkFault drops packets on one direction of a link as they arrive at
// its receiving end (iptables raw PREROUTING -i), so that the link stays up
// and routing does not change: everything crossing it that way is dropped,
// forwarded or not, with probability p (1 for a black hole).
type linkFault struct {
	link *fabricLink
	p    float64
}

func (lf *linkFault) rule() []string {
	r := []string{"PREROUTING", "-i", lf.link.toIf}
	if lf.p < 1 {
		r = append(r, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprint(lf.p))
	}
	return append(r, "-m", "comment", "--comment", "llama-fabric-fault", "-j", "DROP")
}

// set installs (on) or removes (off) the fault.
func (lf *linkFault) set(t *testing.T, on bool) {
	t.Helper()
	op := "-D"
	if on {
		op = "-I"
	}
	lf.link.toNS.Run(t, append([]string{"iptables", "-w", "-t", "raw", op}, lf.rule()...)...)
}
