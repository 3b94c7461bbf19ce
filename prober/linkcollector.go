package prober

import (
	"cmp"
	"slices"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/llama-exporter/llama_exporter/prober/internal/pathmodel"
	"github.com/prometheus/client_golang/prometheus"
)

// Descriptors of the per-link fold on /metrics: every traced flow of every
// session counts once on each link of its path, named by the address that
// answered at the link's far end. Fleet rules sum them by link, so their
// cost grows with links, not with pairs times flows.
var (
	descLinkFlows = metricdef.Desc(metricdef.Gauge, "llama_path_link_flows",
		"Traced flows of this exporter's sessions whose path crosses the link whose far end answered from `to`.",
		[]string{"module", "to"}, nil)
	descLinkLossy = metricdef.Desc(metricdef.Gauge, "llama_path_link_lossy_flows",
		"Of llama_path_link_flows, those losing probes in their window on the way out (as the stateful reflector counted), or losing every probe; absent when none.",
		[]string{"module", "to"}, nil)
	descLinkTargets = metricdef.Desc(metricdef.Gauge, "llama_path_link_lossy_targets",
		"Sessions (targets) with at least one of llama_path_link_lossy_flows on the link; absent when none.",
		[]string{"module", "to"}, nil)
	descLossyLink = metricdef.Desc(metricdef.Gauge, "llama_probe_path_lossy_link_info",
		"1 for each link (named by its far end's answering address, `to`) that a flow crosses whose loss counts against its path (see llama_path_link_lossy_flows); absent otherwise.",
		[]string{"to"}, nil)
)

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
	fold := pathmodel.Fold{}
	for _, s := range c.m.Sessions() {
		if s.paths == nil {
			continue
		}
		sn := s.Snapshot()
		fold.Add(s.Module, s.pathViews(&sn))
	}
	keys := make([]pathmodel.LinkKey, 0, len(fold))
	for k := range fold {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pathmodel.LinkKey) int { return cmp.Or(cmp.Compare(a.Module, b.Module), a.To.Compare(b.To)) })
	for _, k := range keys {
		t, to := fold[k], k.To.String()
		ch <- prometheus.MustNewConstMetric(descLinkFlows, prometheus.GaugeValue, float64(t.Flows), k.Module, to)
		if t.Lossy > 0 {
			ch <- prometheus.MustNewConstMetric(descLinkLossy, prometheus.GaugeValue, float64(t.Lossy), k.Module, to)
			ch <- prometheus.MustNewConstMetric(descLinkTargets, prometheus.GaugeValue, float64(t.Targets), k.Module, to)
		}
	}
}
