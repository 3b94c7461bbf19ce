package prober

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// deadFloor is the fewest decided probes in the window, all lost, that make
// a flow dead: its loss counts against its path though no reply tells its
// direction.
const deadFloor = 3

// Descriptors of the per-link fold on /metrics: every traced flow of every
// session counts once on each link of its path, named by the address that
// answered at the link's far end. Fleet rules sum them by link, so their
// cost grows with links, not with pairs times flows.
var (
	descLinkFlows = prometheus.NewDesc("llama_path_link_flows",
		"Traced flows of this exporter's sessions whose path crosses the link whose far end answered from `to`.",
		[]string{"module", "to"}, nil)
	descLinkLossy = prometheus.NewDesc("llama_path_link_lossy_flows",
		"Of llama_path_link_flows, those losing probes in their window on the way out (as the stateful reflector counted), or losing every probe; absent when none.",
		[]string{"module", "to"}, nil)
	descLinkTargets = prometheus.NewDesc("llama_path_link_lossy_targets",
		"Sessions (targets) with at least one of llama_path_link_lossy_flows on the link; absent when none.",
		[]string{"module", "to"}, nil)
	descLossyLink = prometheus.NewDesc("llama_probe_path_lossy_link_info",
		"1 for each link (named by its far end's answering address, `to`) that a flow crosses whose loss counts against its path (see llama_path_link_lossy_flows); absent otherwise.",
		[]string{"to"}, nil)
)

// votes reports whether the flow's window loss counts against the links of
// its path: some of it is known to be on the way out, or the flow lost
// every probe (dead), whose direction no reply can tell. Loss known to be
// on the way back, or of unknown direction but partial, does not.
func (v *flowView) votes() bool {
	return v.forward() || v.decided >= deadFloor && v.lost == v.decided
}

// links calls fn with the address of each hop of the flow's path that
// answered, from the first hop to the target.
func (v *flowView) links(fn func(to netip.Addr)) {
	for h := range v.length() {
		if a := v.hops[h].addr; a.IsValid() {
			fn(a)
		}
	}
}

// lossyLinks returns the far-end addresses of the links that the session's
// voting flows cross, in ascending order, each once.
func lossyLinks(views []flowView) []netip.Addr {
	var out []netip.Addr
	for i := range views {
		if views[i].votes() {
			views[i].links(func(to netip.Addr) { out = append(out, to) })
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// linkKey names a link within a module.
type linkKey struct {
	module string
	to     netip.Addr
}

// linkTally is one link's share of the fold.
type linkTally struct {
	flows, lossy, targets int
}

// linkFold sums the paths of the traced sessions per link.
type linkFold map[linkKey]*linkTally

// add counts the flows of one session.
func (f linkFold) add(module string, views []flowView) {
	for i := range views {
		v := &views[i]
		v.links(func(to netip.Addr) {
			t := f.tally(linkKey{module, to})
			t.flows++
			if v.votes() {
				t.lossy++
			}
		})
	}
	for _, to := range lossyLinks(views) {
		f.tally(linkKey{module, to}).targets++
	}
}

func (f linkFold) tally(k linkKey) *linkTally {
	t := f[k]
	if t == nil {
		t = &linkTally{}
		f[k] = t
	}
	return t
}

// linkCollector exposes the per-link fold of a Manager's traced sessions on
// /metrics.
type linkCollector struct{ m *Manager }

// Describe sends the fold's descriptors.
func (c linkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLinkFlows
	ch <- descLinkLossy
	ch <- descLinkTargets
}

// Collect folds every traced session's flows per link.
func (c linkCollector) Collect(ch chan<- prometheus.Metric) {
	fold := linkFold{}
	for _, s := range c.m.Sessions() {
		if s.paths == nil {
			continue
		}
		sn := s.Snapshot()
		fold.add(s.Module, s.pathViews(&sn))
	}
	keys := make([]linkKey, 0, len(fold))
	for k := range fold {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b linkKey) int { return cmp.Or(cmp.Compare(a.module, b.module), a.to.Compare(b.to)) })
	for _, k := range keys {
		t, to := fold[k], k.to.String()
		ch <- prometheus.MustNewConstMetric(descLinkFlows, prometheus.GaugeValue, float64(t.flows), k.module, to)
		if t.lossy > 0 {
			ch <- prometheus.MustNewConstMetric(descLinkLossy, prometheus.GaugeValue, float64(t.lossy), k.module, to)
			ch <- prometheus.MustNewConstMetric(descLinkTargets, prometheus.GaugeValue, float64(t.targets), k.module, to)
		}
	}
}
