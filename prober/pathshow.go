package prober

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/llama-exporter/llama_exporter/prober/internal/pathmodel"
	"github.com/prometheus/client_golang/prometheus"
)

// Descriptors of the path tracing series on /probe, with path_trace only.
var (
	descPathHops = metricdef.Desc(metricdef.Gauge, "llama_probe_flow_path_hops",
		"Hops to the target on the flow's path (flow = source port), from its traces: the TTL that reached the target, or the farthest hop that answered.",
		[]string{"flow"}, nil)
	descPathChanges = metricdef.Desc(metricdef.Counter, "llama_probe_flow_path_changes_total",
		"Times the flow's hop list changed: a hop answered from another address, or the target at another TTL.",
		[]string{"flow"}, nil)
	descHopInfo = metricdef.Desc(metricdef.Gauge, "llama_probe_path_hop_info",
		"One series per hop of each flow's path: hop is the TTL, address the hop's latest answer (* if none); always 1.",
		[]string{"flow", "hop", "address"}, nil)
	descSuspect = metricdef.Desc(metricdef.Gauge, "llama_probe_path_suspect_link_info",
		"1 while the link from -> to is suspected of the loss of the flows (source ports, comma-separated); absent otherwise. to, the far end's answering address, names the link; direction is forward when the reflector counted the loss on the way out, unknown when it could not tell.",
		[]string{"from", "to", "flows", "direction"}, nil)
)

// pathViews returns the session's flows' paths, with their source ports
// and whether they lose probes, as of snapshot sn.
func (s *Session) pathViews(sn *Snapshot) []pathmodel.FlowView {
	ports := make([]uint16, s.cfg.Flows)
	lost, decided := make([]int, s.cfg.Flows), make([]int, s.cfg.Flows)
	for i := range ports {
		ports[i] = s.pool.flowPort(sn.Dst.Addr(), i)
		if i < len(sn.FlowWindowLost) {
			lost[i], decided[i] = sn.FlowWindowLost[i], sn.FlowWindowSent[i]
		}
	}
	views := s.paths.Views(mono(), ports, lost, decided)
	for i := range views {
		views[i].Stateful = sn.Stateful
		if i < len(sn.FlowWindowForwardLost) {
			views[i].ForwardLost, views[i].BackwardLost = sn.FlowWindowForwardLost[i], sn.FlowWindowBackwardLost[i]
		}
	}
	return views
}

// SuspectLinks returns the links suspected of the session's loss now
// (module option path_trace; nil without it, or without loss).
func (s *Session) SuspectLinks() []SuspectLink {
	if s.paths == nil {
		return nil
	}
	sn := s.Snapshot()
	return pathmodel.Localise(sn.Src, s.pathViews(&sn))
}

// collectPaths emits the path tracing series of snapshot sn.
func (c sessionCollector) collectPaths(ch chan<- prometheus.Metric, sn *Snapshot) {
	views := c.s.pathViews(sn)
	for i := range views {
		v := &views[i]
		flow := strconv.Itoa(int(v.Port))
		ch <- prometheus.MustNewConstMetric(descPathChanges, prometheus.CounterValue, float64(v.Changes), flow)
		n := v.Length()
		if n == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descPathHops, prometheus.GaugeValue, float64(n), flow)
		for h := range n {
			ch <- prometheus.MustNewConstMetric(descHopInfo, prometheus.GaugeValue, 1, flow, strconv.Itoa(h+1), pathmodel.Label(v.Hops[h].Addr))
		}
	}
	for _, to := range pathmodel.LossyLinks(views) {
		ch <- prometheus.MustNewConstMetric(descLossyLink, prometheus.GaugeValue, 1, to.String())
	}
	for _, l := range pathmodel.Localise(sn.Src, views) {
		ch <- prometheus.MustNewConstMetric(descSuspect, prometheus.GaugeValue, 1, pathmodel.Label(l.From), pathmodel.Label(l.To), l.FlowList(), l.Direction)
	}
}

// writePathDebug writes each flow's path with the share of trace probes
// each hop answered over the remembered traces, the suspect links, and
// marks the hop each suspect link leads to.
func writePathDebug(b *strings.Builder, s *Session, sn *Snapshot) {
	sent, answered := s.paths.Counts()
	fmt.Fprintf(b, "\nPath trace (%s): %d trace probes sent, %d answered; answers over the last %d traces of each flow\n",
		s.cfg.PathTrace, sent, answered, pathmodel.History)
	views := s.pathViews(sn)
	links := pathmodel.Localise(sn.Src, views)
	now := mono()
	for i := range views {
		writeFlowPath(b, &views[i], sn, i, links, now)
	}
	writeBackwardNote(b, views)
	if len(links) == 0 {
		b.WriteString("Suspect links: none\n")
		return
	}
	b.WriteString("Suspect links:\n")
	for _, l := range links {
		fmt.Fprintf(b, "  %s, direction %s\n", l, l.Direction)
	}
}

// writeBackwardNote says which flows lose only replies: their loss names
// no link here, since the traces follow the probes' path, not the replies'.
func writeBackwardNote(b *strings.Builder, views []pathmodel.FlowView) {
	var ports []string
	for i := range views {
		if views[i].Lossy && views[i].BackwardOnly() {
			ports = append(ports, strconv.Itoa(int(views[i].Port)))
		}
	}
	if len(ports) > 0 {
		fmt.Fprintf(b, "Flows %s lose replies only (the reflector counted their probes): the replies' path is not traced here; the reverse pair's sessions trace it.\n",
			strings.Join(ports, ","))
	}
}

// writeFlowPath writes flow i's path.
func writeFlowPath(b *strings.Builder, v *pathmodel.FlowView, sn *Snapshot, i int, links []pathmodel.SuspectLink, now int64) {
	last := "never"
	if v.Done > 0 || v.Running {
		last = time.Duration(now-v.LastStart).Round(time.Millisecond).String() + " ago"
	}
	fmt.Fprintf(b, "  flow %d: window loss %s, %d hops, %d traces (last started %s), path changes %d\n",
		v.Port, lossPercent(sn, i), v.Length(), v.Done, last, v.Changes)
	if v.Length() == 0 {
		return
	}
	b.WriteString("    hop  address                                  answered        rtt\n")
	for h := range v.Length() {
		hh := &v.Hops[h]
		probed, ans := bits.OnesCount64(hh.Sent&v.Traces), bits.OnesCount64(hh.Answered&v.Traces)
		share, rtt := "-", "-"
		if probed > 0 {
			share = fmt.Sprintf("%d/%d %3.0f%%", ans, probed, 100*float64(ans)/float64(probed))
		}
		if hh.Addr.IsValid() {
			rtt = time.Duration(hh.RTT).Round(time.Microsecond).String()
		}
		fmt.Fprintf(b, "    %-4d %-40s %-15s %s%s\n", h+1, pathmodel.Label(hh.Addr), share, rtt, suspectMark(v, hh, links))
	}
}

// suspectMark marks a hop that a suspect link of the flow leads to.
func suspectMark(v *pathmodel.FlowView, hh *pathmodel.Hop, links []pathmodel.SuspectLink) string {
	for _, l := range links {
		if l.To == hh.Addr && slices.Contains(l.Flows, v.Port) {
			return "  <- suspect link " + pathmodel.Label(l.From) + " -> " + pathmodel.Label(l.To)
		}
	}
	return ""
}

// lossPercent is flow i's window loss, "-" before any probe is decided.
func lossPercent(sn *Snapshot, i int) string {
	if i >= len(sn.FlowWindowSent) || sn.FlowWindowSent[i] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(sn.FlowWindowLost[i])/float64(sn.FlowWindowSent[i]))
}

// SuspectLink is a link suspected of a session's loss (see
// Session.SuspectLinks): the last hop that answers, the next one, the
// lossy flows' source ports and the loss's direction.
type SuspectLink = pathmodel.SuspectLink
