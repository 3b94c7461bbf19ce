package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exporterMetrics are the metric names llama_exporter exposes, from
// DESIGN.md section 7 (kept here because the test must run where the design
// document is not checked out), by type so that histogram and summary
// series names can be derived.
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
		"llama_probe_flow_path_hops",
		"llama_probe_path_hop_info",
		"llama_probe_path_suspect_link_info",
		"llama_exporter_build_info",
		"llama_exporter_sessions",
		"llama_exporter_config_last_reload_successful",
		"llama_exporter_config_last_reload_success_timestamp_seconds",
		"llama_reflector_up",
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
	},
	"histogram": {
		"llama_probe_rtt_seconds",
		"llama_probe_reflector_dwell_seconds",
	},
	"summary": {
		"llama_probe_window_rtt_seconds",
	},
}

// readmeOnlyMetrics are exposed by the exporter and documented in the
// README but not listed in DESIGN.md.
var readmeOnlyMetrics = []string{
	"llama_exporter_replies_bad_data_total",
	"llama_exporter_replies_unmatched_total",
	"llama_reflector_sessions",
}

// legacyNames are the LLAMA fork's metric names that section 7 of
// DESIGN.md mentions; the exporter does not expose them, rules.yml records
// them.
var legacyNames = map[string]bool{
	"llama_packet_loss_percentage": true,
	"llama_rtt":                    true,
	"llama_packets_sent":           true,
	"llama_packets_lost":           true,
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

// TestMetricListMatchesDesign compares exporterMetrics with section 7 of
// DESIGN.md when the document is where CI keeps it (../shared/DESIGN.md
// from the repository root); elsewhere it skips.
func TestMetricListMatchesDesign(t *testing.T) {
	path := filepath.Join(repoRoot(t), "..", "shared", "DESIGN.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("DESIGN.md not found next to the repository (%v); the list in names_test.go is not compared with it", err)
	}
	doc := string(data)
	start := strings.Index(doc, "\n## 7.")
	end := strings.Index(doc, "\n## 8.")
	if start < 0 || end < start {
		t.Fatalf("%s: no section 7 followed by section 8", path)
	}
	section := doc[start:end]
	var listed []string
	for _, names := range exporterMetrics {
		listed = append(listed, names...)
	}
	inList := map[string]bool{}
	for _, n := range listed {
		inList[n] = true
	}
	// Names appear as `name`, `name{label}` or `..._suffix` (the previous
	// name with another ending).
	var full, suffixes []string
	for _, m := range regexp.MustCompile("`((?:\\.\\.\\.)?[a-z_]+)(?:\\{[^`]*\\})?`").FindAllStringSubmatch(section, -1) {
		name := m[1]
		switch {
		case strings.HasPrefix(name, "..."):
			suffixes = append(suffixes, strings.TrimPrefix(name, "..."))
		case legacyNames[name]:
			// the fork's names, which rules.yml records
		case strings.HasPrefix(name, "llama_") || strings.HasPrefix(name, "probe_"):
			full = append(full, name)
		}
	}
	if len(full) < 20 {
		t.Fatalf("found only %d metric names in section 7 of %s: %v", len(full), path, full)
	}
	for _, n := range full {
		if !inList[n] {
			t.Errorf("DESIGN.md section 7 names %s, missing from exporterMetrics in names_test.go", n)
		}
	}
	for _, s := range suffixes {
		found := false
		for _, n := range listed {
			found = found || strings.HasSuffix(n, s)
		}
		if !found {
			t.Errorf("DESIGN.md section 7 names ...%s, and no name in exporterMetrics ends so", s)
		}
	}
	for _, n := range listed {
		found := strings.Contains(section, "`"+n+"`") || strings.Contains(section, "`"+n+"{")
		for _, s := range suffixes {
			found = found || strings.HasSuffix(n, s)
		}
		if !found {
			t.Errorf("exporterMetrics lists %s, which section 7 of DESIGN.md does not name", n)
		}
	}
}
