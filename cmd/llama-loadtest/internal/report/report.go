//go:build linux

// Package report holds the load tool's report helpers: quantiles and
// medians, number formats, JSON lines, and reading an exporter's
// exposition (fetch, parse, look up values by name and labels).
package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Quantile returns the nearest-rank q-quantile (0 < q <= 1) of sorted
// values, the same definition the exporter uses for its window summary;
// NaN for no values.
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// DurationQuantiles sorts a copy of ds and returns its nearest-rank
// quantiles in seconds, keyed by q.
func DurationQuantiles(ds []time.Duration, qs ...float64) map[float64]float64 {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = d.Seconds()
	}
	slices.Sort(v)
	out := make(map[float64]float64, len(qs))
	for _, q := range qs {
		out[q] = Quantile(v, q)
	}
	return out
}

// Micros rounds seconds to microseconds with one decimal, for JSON; NaN
// stays NaN (and is written as null by jsonLine).
func Micros(s float64) float64 {
	return math.Round(s*1e7) / 10
}

// Round2 rounds v to two decimals, for JSON.
func Round2(v float64) float64 { return math.Round(v*100) / 100 }

// Seconds formats seconds for humans.
func Seconds(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	d := time.Duration(s * 1e9)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", s*1e6)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.2fs", s)
}

// Bytes formats an octet count in MiB for humans.
func Bytes(b uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// Percent formats a percentage for humans; "n/a" when unknown.
func Percent(p float64) string {
	if p < 0 || math.IsNaN(p) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", p)
}

// JSONLine writes v as one line of JSON to w. NaN and ±Inf float64 values
// of a map[string]any become null, since JSON has no NaN.
func JSONLine(w io.Writer, v map[string]any) {
	for k, x := range v {
		if f, ok := x.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			v[k] = nil
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "llama-loadtest: json: %v\n", err)
		return
	}
	fmt.Fprintf(w, "%s\n", b)
}

// Metrics is a parsed Prometheus text exposition.
type Metrics map[string]*dto.MetricFamily

// Fetch GETs url and parses it as the Prometheus text format.
func Fetch(ctx context.Context, client *http.Client, url string) (Metrics, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, took, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	mfs, err := Parse(strings.NewReader(string(body)))
	return mfs, took, err
}

// Parse reads a Prometheus text exposition.
func Parse(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Value returns the sum over all series of a counter, gauge or untyped
// metric whose labels include match (name=Value pairs), and whether any
// series matched.
func (m Metrics) Value(name string, match ...string) (float64, bool) {
	mf, ok := m[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, s := range mf.GetMetric() {
		if !hasLabels(s, match) {
			continue
		}
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		default:
			continue
		}
		found = true
	}
	return sum, found
}

// Get is Value with NaN for a missing metric.
func (m Metrics) Get(name string, match ...string) float64 {
	v, ok := m.Value(name, match...)
	if !ok {
		return math.NaN()
	}
	return v
}

// SummaryQuantile returns quantile q of the (first) summary name.
func (m Metrics) SummaryQuantile(name string, q float64) float64 {
	mf, ok := m[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return math.NaN()
	}
	for _, qq := range mf.GetMetric()[0].GetSummary().GetQuantile() {
		if qq.GetQuantile() == q {
			return qq.GetValue()
		}
	}
	return math.NaN()
}

// SummaryCount returns the sample count of the (first) summary name.
func (m Metrics) SummaryCount(name string) float64 {
	mf, ok := m[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return math.NaN()
	}
	return float64(mf.GetMetric()[0].GetSummary().GetSampleCount())
}

// Label returns the value of label l on the first series of name.
func (m Metrics) Label(name, l string) string {
	mf, ok := m[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return ""
	}
	for _, lp := range mf.GetMetric()[0].GetLabel() {
		if lp.GetName() == l {
			return lp.GetValue()
		}
	}
	return ""
}

func hasLabels(s *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		ok := false
		for _, lp := range s.GetLabel() {
			if lp.GetName() == match[i] && lp.GetValue() == match[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// SampleValue finds the sample of an unlabelled metric in a text
// exposition without parsing all of it (cheap enough for thousands of
// first scrapes).
func SampleValue(body, name string) (float64, bool) {
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// Sum adds up a family's counters, gauges and histogram sample counts
// over all label sets; 0 when the family is absent.
func (m Metrics) Sum(name string) float64 {
	mf := m[name]
	if mf == nil {
		return 0
	}
	var total float64
	for _, s := range mf.Metric {
		switch {
		case s.Counter != nil:
			total += s.Counter.GetValue()
		case s.Gauge != nil:
			total += s.Gauge.GetValue()
		case s.Histogram != nil:
			total += float64(s.Histogram.GetSampleCount())
		}
	}
	return total
}

// Median returns the median of v (v is not reordered); NaN for none.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
