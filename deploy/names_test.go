package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exporterMetrics are the metric names llama_exporter exposes, as the
// README's Metrics section documents them, by type so that histogram and
// summary series names can be derived.
var exporterMetrics = map[string][]string{
	"gauge": {
		"probe_success",
		"probe_duration_seconds",
		"llama_probe_window_seconds",
		"llama_probe_window_packets_sent",
		"llama_probe_window_packets_lost",
		"llama_probe_window_loss_ratio",
		"llama_probe_window_rtt_min_seconds",
		"llama_probe_window_rtt_max_seconds",
		"llama_probe_window_jitter_seconds",
		"llama_probe_target_info",
		"llama_probe_window_forward_loss_ratio",
		"llama_probe_window_backward_loss_ratio",
		"llama_probe_window_rtt_stddev_seconds",
		"llama_probe_forward_hops",
		"llama_probe_flow_window_loss_ratio",
		"llama_probe_flow_window_forward_loss_ratio",
		"llama_probe_flow_window_backward_loss_ratio",
		"llama_probe_flow_path_hops",
		"llama_probe_path_hop_info",
		"llama_probe_path_suspect_link_info",
		"llama_probe_path_lossy_link_info",
		"llama_path_link_flows",
		"llama_path_link_lossy_flows",
		"llama_path_link_lossy_targets",
		"llama_exporter_build_info",
		"llama_exporter_sessions",
		"llama_exporter_config_last_reload_successful",
		"llama_exporter_config_last_reload_success_timestamp_seconds",
		"llama_reflector_up",
		"llama_exporter_host_drops_enabled",
	},
	"counter": {
		"llama_probe_packets_sent_total",
		"llama_probe_packets_received_total",
		"llama_probe_packets_lost_total",
		"llama_probe_packets_late_total",
		"llama_probe_packets_duplicated_total",
		"llama_probe_packets_reordered_total",
		"llama_probe_packets_forward_lost_total",
		"llama_probe_packets_backward_lost_total",
		"llama_probe_forward_hops_changes_total",
		"llama_probe_dscp_remarked_total",
		"llama_probe_flow_packets_sent_total",
		"llama_probe_flow_packets_lost_total",
		"llama_probe_flow_path_changes_total",
		"llama_exporter_sessions_started_total",
		"llama_exporter_sessions_expired_total",
		"llama_exporter_sessions_rejected_total",
		"llama_exporter_module_unknown_total",
		"llama_exporter_send_errors_total",
		"llama_reflector_packets_received_total",
		"llama_reflector_packets_reflected_total",
		"llama_reflector_packets_bad_data_total",
		"llama_reflector_packets_throttled_total",
		"llama_reflector_send_errors_total",
		"llama_probe_timestamp_fallbacks_total",
		"llama_host_drops_total",
		"llama_probe_reflector_timestamps_invalid_total",
		"llama_probe_packets_dropped_by_host_total",
		"llama_host_receive_latency_overflows_total",
		"llama_host_receive_latency_resyncs_total",
	},
	"histogram": {
		"llama_probe_rtt_seconds",
		"llama_probe_reflector_dwell_seconds",
		"llama_exporter_receive_delay_seconds",
		"llama_host_receive_latency_seconds",
	},
	"summary": {
		"llama_probe_window_rtt_seconds",
	},
}

// readmeOnlyMetrics are exposed by the exporter and documented in the
// README, beyond the names that dashboards and alerts rely on.
var readmeOnlyMetrics = []string{
	"llama_exporter_replies_bad_data_total",
	"llama_exporter_replies_unmatched_total",
	"llama_reflector_sessions",
}

// scrapeMetrics are the series Prometheus adds to every scrape.
var scrapeMetrics = []string{
	"up",
	"scrape_duration_seconds",
	"scrape_samples_scraped",
	"scrape_samples_post_metric_relabeling",
	"scrape_series_added",
}

// knownMetrics returns every series name a query may use: the exporter's
// names with the _bucket/_sum/_count series of histograms and summaries
// (a native histogram keeps the bare name), the scrape series, and extra
// (the names recording rules produce).
func knownMetrics(extra ...string) map[string]bool {
	known := map[string]bool{}
	for typ, names := range exporterMetrics {
		for _, n := range names {
			known[n] = true
			switch typ {
			case "histogram":
				known[n+"_bucket"] = true
				known[n+"_sum"] = true
				known[n+"_count"] = true
			case "summary":
				known[n+"_sum"] = true
				known[n+"_count"] = true
			}
		}
	}
	for _, list := range [][]string{readmeOnlyMetrics, scrapeMetrics, extra} {
		for _, n := range list {
			known[n] = true
		}
	}
	return known
}

// TestMetricListMatchesREADME compares exporterMetrics with the metric
// tables of the README's Metrics section, which document every series the
// exporter serves: a name in one and not the other is a documentation bug
// or a stale list here.
func TestMetricListMatchesREADME(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "\n## Metrics")
	end := strings.Index(doc[start+1:], "\n## ") + start + 1
	if start < 0 || end <= start {
		t.Fatal("README.md: no Metrics section followed by another section")
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:llama|probe)_[a-z_]+)(?:\\{[^`]*\\})?`").FindAllStringSubmatch(doc[start:end], -1) {
		documented[m[1]] = true
	}
	listed := map[string]bool{}
	for _, names := range exporterMetrics {
		for _, n := range names {
			listed[n] = true
			if !documented[n] {
				t.Errorf("exporterMetrics lists %s, which the README's Metrics section does not document", n)
			}
		}
	}
	for _, n := range readmeOnlyMetrics {
		listed[n] = true
	}
	for n := range documented {
		if !listed[n] {
			t.Errorf("the README's Metrics section documents %s, missing from exporterMetrics in names_test.go", n)
		}
	}
}
