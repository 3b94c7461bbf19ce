package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/llama-exporter/llama_exporter/config"             // its families
	_ "github.com/llama-exporter/llama_exporter/internal/hostdrops" // its families
	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	_ "github.com/llama-exporter/llama_exporter/prober"    // its families
	_ "github.com/llama-exporter/llama_exporter/reflector" // its families
)

// libraryMetrics are the families that the libraries the exporter uses
// serve on /metrics under its name: prometheus/common/version's build info.
var libraryMetrics = []metricdef.Family{{Name: "llama_exporter_build_info", Type: metricdef.Gauge}}

// exporterMetrics returns every metric family the exporter serves, on
// /probe and /metrics, name and type, as the code defines them: the
// packages imported here record theirs in metricdef when initialised.
func exporterMetrics() []metricdef.Family {
	return append(metricdef.All(), libraryMetrics...)
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
	for _, f := range exporterMetrics() {
		n := f.Name
		known[n] = true
		switch f.Type {
		case metricdef.Histogram:
			known[n+"_bucket"] = true
			known[n+"_sum"] = true
			known[n+"_count"] = true
		case metricdef.Summary:
			known[n+"_sum"] = true
			known[n+"_count"] = true
		}
	}
	for _, list := range [][]string{scrapeMetrics, extra} {
		for _, n := range list {
			known[n] = true
		}
	}
	return known
}

// TestMetricListMatchesREADME compares the families the code defines with
// the tables of the README's Metrics section, which document every series
// the exporter serves, name and type: a family in one and not the other,
// or of another type, is a documentation bug.
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
	documented := map[string]metricdef.Type{} // name: the type its table row gives
	name := regexp.MustCompile("`((?:llama|probe)_[a-z_]+)(?:\\{[^`]*\\})?`")
	for _, line := range strings.Split(doc[start:end], "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[0], -1) {
			documented[m[1]] = metricdef.Type(strings.TrimSpace(cells[1]))
		}
	}
	defined := map[string]bool{}
	for _, f := range exporterMetrics() {
		defined[f.Name] = true
		switch typ, ok := documented[f.Name]; {
		case !ok:
			t.Errorf("the code defines %s (%s), which the README's Metrics section does not document", f.Name, f.Type)
		case typ != f.Type:
			t.Errorf("%s is a %s in the code, a %s in the README's Metrics section", f.Name, f.Type, typ)
		}
	}
	for n := range documented {
		if !defined[n] {
			t.Errorf("the README's Metrics section documents %s, which the code does not define", n)
		}
	}
}
