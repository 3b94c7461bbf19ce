//go:build linux

package e2e

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// What Prometheus sees of a fault, per pair and per flow, against what the
// ECMP plan says crosses the faulty link.

// flowKey is one ECMP flow of one pair.
type flowKey struct {
	src, dst string // host names
	port     int    // the flow's source port
}

// flowPath returns the directed links (fabric.links keys) that a flow's
// probes cross, or its replies when backward.
func (f *fabric) flowPath(src, dst *fabricHost, port int, backward bool) []string {
	from, to := src, dst
	if backward {
		from, to = dst, src
	}
	up, down := fmt.Sprintf("leaf%d", from.leaf), fmt.Sprintf("leaf%d", to.leaf)
	path := []string{from.name + ">" + up}
	if from.leaf != to.leaf {
		// The leaf that chooses the spine is the one the flow's socket
		// is behind for probes, the reflector's for replies: from's leaf.
		spine := fmt.Sprintf("spine%d", fabricSpine(len(f.spines), from.leaf, port-fabricFirstPort, backward)+1)
		path = append(path, up+">"+spine, spine+">"+down)
	}
	return append(path, down+">"+to.name)
}

// crossing returns the flows whose probes (forward) or replies (backward)
// cross the directed link.
func (f *fabric) crossing(link string) (forward, backward map[flowKey]bool) {
	forward, backward = map[flowKey]bool{}, map[flowKey]bool{}
	for _, src := range f.hosts {
		for _, dst := range f.hosts {
			if src == dst {
				continue
			}
			for i := range fabricFlows {
				k := flowKey{src.name, dst.name, fabricFirstPort + i}
				for _, l := range f.flowPath(src, dst, k.port, false) {
					forward[k] = forward[k] || l == link
				}
				for _, l := range f.flowPath(src, dst, k.port, true) {
					backward[k] = backward[k] || l == link
				}
				if !forward[k] {
					delete(forward, k)
				}
				if !backward[k] {
					delete(backward, k)
				}
			}
		}
	}
	return forward, backward
}

// lossyFlows returns the flows with loss in their window, from Prometheus.
func (fl *fleet) lossyFlows() (map[flowKey]float64, error) {
	s, err := fl.query(`llama_probe_flow_window_loss_ratio{job="llama"} > 0`)
	if err != nil {
		return nil, err
	}
	out := map[flowKey]float64{}
	for _, x := range s {
		port, err := strconv.Atoi(x.Metric["flow"])
		if err != nil {
			return nil, fmt.Errorf("flow label %q: %v", x.Metric["flow"], err)
		}
		out[flowKey{x.Metric["source"], x.Metric["destination"], port}] = x.Value
	}
	return out, nil
}

// logFaultView logs, in the middle of a fault, the lossy flows against the
// flows that cross the faulty link, the pairs by direction of loss, the
// links that sessions suspect and the alerts; for a black hole, the lossy
// flows must be exactly those that cross the link, either way.
func (fl *fleet) logFaultView(t *testing.T, fc fabricFault) {
	t.Helper()
	lossy, err := fl.lossyFlows()
	if err != nil {
		t.Errorf("fault %s: %v", fc.id, err)
		return
	}
	var fwd, back map[flowKey]bool
	if fc.link != "" {
		fwd, back = fl.f.crossing(fc.link)
	} else {
		fwd, back = fl.f.towards(fc.host)
	}
	var outside, missed []string
	for k := range lossy {
		if !fwd[k] && !back[k] {
			outside = append(outside, fmt.Sprintf("%s->%s:%d", k.src, k.dst, k.port))
		}
	}
	for _, set := range []map[flowKey]bool{fwd, back} {
		for k := range set {
			if _, ok := lossy[k]; !ok {
				missed = append(missed, fmt.Sprintf("%s->%s:%d", k.src, k.dst, k.port))
			}
		}
	}
	sort.Strings(outside)
	sort.Strings(missed)
	t.Logf("fault %s at %v: %d flows lossy; %d cross the fault forward, %d backward; %d lossy flows cross nothing faulty %v; %d crossing flows without loss %v",
		fc.id, faultViewAt, len(lossy), len(fwd), len(back), len(outside), head(outside), len(missed), head(missed))
	if fc.p == 1 && (len(outside) > 0 || len(missed) > 0) {
		t.Errorf("fault %s (%s): the lossy flows are not exactly those whose probes or replies cross the link", fc.id, fc.desc)
	}
	for _, q := range []struct{ what, expr string }{
		{"pairs with forward loss", `count(llama_probe_window_forward_loss_ratio{job="llama"} > 0)`},
		{"pairs with backward loss", `count(llama_probe_window_backward_loss_ratio{job="llama"} > 0)`},
		{"pairs with loss", `count(llama_probe_window_loss_ratio{job="llama"} > 0)`},
		{"suspect links (pairs naming each to, by direction)", `count by (to, direction) (llama_probe_path_suspect_link_info{job="llama"})`},
		{"alerts", `count by (alertname, alertstate) (ALERTS)`},
	} {
		s, err := fl.query(q.expr)
		if err != nil {
			t.Logf("fault %s: %s: %v", fc.id, q.what, err)
			continue
		}
		var parts []string
		for _, x := range s {
			delete(x.Metric, "__name__")
			label := ""
			if to := x.Metric["to"]; to != "" {
				label = fmt.Sprintf(" (%s)", fl.f.devices[to])
			}
			parts = append(parts, fmt.Sprintf("%v%s=%v", x.Metric, label, x.Value))
		}
		sort.Strings(parts)
		t.Logf("fault %s: %s: %s", fc.id, q.what, strings.Join(parts, " "))
	}
}

// towards returns the flows of every pair towards the host (its reflector
// killed: every probe lost, forward) and none backward: the host's own
// pairs are no longer scraped.
func (f *fabric) towards(host string) (forward, backward map[flowKey]bool) {
	forward, backward = map[flowKey]bool{}, map[flowKey]bool{}
	for _, src := range f.hosts {
		if src.name == host {
			continue
		}
		for i := range fabricFlows {
			forward[flowKey{src.name, host, fabricFirstPort + i}] = true
		}
	}
	return forward, backward
}

// affectedPairs returns the pairs (source, destination) that a fault
// explains: those with a flow crossing the faulty link either way, or
// those to or from the faulty host.
func (f *fabric) affectedPairs(fc fabricFault) map[[2]string]bool {
	out := map[[2]string]bool{}
	if fc.host != "" {
		for _, h := range f.hosts {
			out[[2]string{h.name, fc.host}], out[[2]string{fc.host, h.name}] = true, true
		}
		return out
	}
	forward, backward := f.crossing(fc.link)
	for _, m := range []map[flowKey]bool{forward, backward} {
		for k := range m {
			out[[2]string{k.src, k.dst}] = true
		}
	}
	return out
}

// head returns the first few elements of s, for logs.
func head(s []string) []string {
	const n = 8
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... %d more", len(s)-n))
	}
	return s
}
