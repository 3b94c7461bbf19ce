//go:build linux

package report

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{
		{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0.1, 1}, {0.01, 1}, {0.55, 6},
	} {
		if got := Quantile(v, c.q); got != c.want {
			t.Errorf("quantile(1..10, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("quantile(nil) = %v, want NaN", got)
	}
	if got := Quantile([]float64{7}, 0.999); got != 7 {
		t.Errorf("quantile([7], 0.999) = %v, want 7", got)
	}
	// durationQuantiles sorts (a copy) first.
	ds := []time.Duration{5 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	q := DurationQuantiles(ds, 0.5, 1)
	if q[0.5] != 0.003 || q[1] != 0.005 {
		t.Errorf("durationQuantiles = %v, want p50 0.003 and max 0.005", q)
	}
	if ds[0] != 5*time.Millisecond {
		t.Error("durationQuantiles reordered its argument")
	}
	if m := Median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
}

func TestMetricsHelpers(t *testing.T) {
	body := `# TYPE probe_success gauge
probe_success 1
# TYPE llama_probe_packets_sent_total counter
llama_probe_packets_sent_total 120
# TYPE llama_probe_window_rtt_seconds summary
llama_probe_window_rtt_seconds{quantile="0.5"} 4.5e-05
llama_probe_window_rtt_seconds{quantile="0.99"} 9e-05
llama_probe_window_rtt_seconds_sum 0.005
llama_probe_window_rtt_seconds_count 100
# TYPE llama_probe_target_info gauge
llama_probe_target_info{dst_ip="127.0.0.1",timestamps="kernel"} 1
# TYPE llama_exporter_sessions gauge
llama_exporter_sessions{module="a"} 3
llama_exporter_sessions{module="b"} 4
`
	m, err := Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Get("llama_probe_packets_sent_total"); v != 120 {
		t.Errorf("sent = %v", v)
	}
	if v := m.Get("llama_exporter_sessions"); v != 7 {
		t.Errorf("sessions sum = %v", v)
	}
	if v := m.Get("llama_exporter_sessions", "module", "b"); v != 4 {
		t.Errorf("sessions{module=b} = %v", v)
	}
	if v := m.Get("missing"); !math.IsNaN(v) {
		t.Errorf("missing = %v", v)
	}
	if v := m.SummaryQuantile("llama_probe_window_rtt_seconds", 0.99); v != 9e-05 {
		t.Errorf("p99 = %v", v)
	}
	if v := m.SummaryCount("llama_probe_window_rtt_seconds"); v != 100 {
		t.Errorf("count = %v", v)
	}
	if v := m.Label("llama_probe_target_info", "timestamps"); v != "kernel" {
		t.Errorf("timestamps = %q", v)
	}
	if v, ok := SampleValue(body, "probe_success"); !ok || v != 1 {
		t.Errorf("sampleValue = %v %v", v, ok)
	}
}
