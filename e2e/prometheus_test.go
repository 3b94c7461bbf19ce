//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"go.yaml.in/yaml/v3"
)

// TestPrometheusScrapesProbes runs a real Prometheus with the README's
// configuration (examples/prometheus.yml), pointed at one llama_exporter
// whose reflector listens on two loopback addresses: the exporter probes its
// own reflector twice, as two targets.
func TestPrometheusScrapesProbes(t *testing.T) {
	promBin := requireTool(t, "prometheus")
	e := startLocalExporter(t, 2,
		"--web.listen-address=127.0.0.1:0",
		"--reflector.listen-address=127.0.0.1:0",
		"--reflector.listen-address=127.0.0.2:0",
	)
	targets := e.reflectors
	if !strings.HasPrefix(targets[0], "127.0.0.1:") || !strings.HasPrefix(targets[1], "127.0.0.2:") {
		t.Fatalf("reflector addresses = %q, want 127.0.0.1:PORT and 127.0.0.2:PORT", targets)
	}

	dir := t.TempDir()
	cfg := prometheusConfig(t, "../examples/prometheus.yml", targets, e.web)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(promtool, "check", "config", cfgFile).CombinedOutput(); err != nil {
			t.Fatalf("promtool check config rejects the rewritten examples/prometheus.yml: %v\n%s\n--- config ---\n%s", err, out, cfg)
		}
	}

	promAddr := testlab.FreeTCP(t)
	prom := startProcess(t, "prometheus", promBin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn",
	)
	procs := []*process{e.proc, prom}
	c := newHTTPClient(nil)
	api := "http://" + promAddr
	waitFor(t, startTimeout, "prometheus to be ready", procs, func() error {
		_, err := get(c, api+"/-/ready")
		return err
	})
	t.Cleanup(func() {
		if t.Failed() {
			logTargets(t, c, api)
		}
	})

	const deadline = 60 * time.Second
	query := func(q string) ([]promSample, error) { return promQuery(c, api, q) }

	// Every probed target has its series, under instance = the target.
	const received = `llama_probe_packets_received_total{job="llama"}`
	var first map[string]float64
	waitFor(t, deadline, received+" for both targets", procs, func() error {
		v, err := byInstance(query(received))
		if err != nil {
			return err
		}
		for inst := range v {
			if inst != targets[0] && inst != targets[1] {
				return fmt.Errorf("unexpected instance %q (targets are %q); all series: %v", inst, targets, v)
			}
		}
		for _, tg := range targets {
			if _, ok := v[tg]; !ok {
				return fmt.Errorf("no series with instance=%q yet; got %v", tg, v)
			}
		}
		first = v
		return nil
	})
	t.Logf("first observation of %s: %v", received, first)

	// The probes keep going between scrapes, so the counters rise.
	waitFor(t, deadline, received+" to rise for both targets", procs, func() error {
		v, err := byInstance(query(received))
		if err != nil {
			return err
		}
		for _, tg := range targets {
			if !(v[tg] > first[tg]) {
				return fmt.Errorf("instance %s: %v, first seen %v", tg, v[tg], first[tg])
			}
		}
		t.Logf("later observation of %s: %v", received, v)
		return nil
	})

	waitFor(t, deadline, `up{job="llama_exporter"} == 1`, procs, func() error {
		s, err := query(`up{job="llama_exporter"}`)
		if err != nil {
			return err
		}
		if len(s) != 1 || s[0].Metric["instance"] != e.web || s[0].Value != 1 {
			return fmt.Errorf("want one series with instance=%q and value 1, got %v", e.web, s)
		}
		return nil
	})

	waitFor(t, deadline, "llama_reflector_packets_reflected_total > 0", procs, func() error {
		s, err := query(`sum(llama_reflector_packets_reflected_total{job="llama_exporter"})`)
		if err != nil {
			return err
		}
		if len(s) != 1 || !(s[0].Value > 0) {
			return fmt.Errorf("got %v", s)
		}
		return nil
	})
}

// TestPromtoolCheckMetrics runs promtool check metrics on /probe answers
// (of a new session and of one that has sent a few probes) and on /metrics.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := requireTool(t, "promtool")
	e := startLocalExporter(t, 1,
		"--web.listen-address=127.0.0.1:0",
		"--reflector.listen-address=127.0.0.1:0",
	)
	c := newHTTPClient(nil)
	probeURL := "http://" + e.web + "/probe?" + url.Values{"target": {e.reflectors[0]}, "module": {"default"}}.Encode()

	body, err := get(c, probeURL)
	if err != nil {
		t.Fatal(err)
	}
	checkMetrics(t, promtool, "first /probe", body)

	var later []byte
	waitFor(t, 30*time.Second, "llama_probe_packets_sent_total > 5", []*process{e.proc}, func() error {
		s, b, err := scrape(c, probeURL)
		if err != nil {
			return err
		}
		sent, err := single(s, "llama_probe_packets_sent_total")
		if err != nil {
			return err
		}
		if !(sent > 5) {
			return fmt.Errorf("llama_probe_packets_sent_total = %v", sent)
		}
		later = b
		return nil
	})
	checkMetrics(t, promtool, "later /probe", later)

	metrics, err := get(c, "http://"+e.web+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(metrics, []byte("llama_reflector_packets_reflected_total")) {
		t.Errorf("/metrics lacks llama_reflector_packets_reflected_total")
	}
	checkMetrics(t, promtool, "/metrics", metrics)
}

// checkMetrics pipes body into promtool check metrics and fails the test
// unless it exits 0 without reporting any error.
func checkMetrics(t *testing.T, promtool, what string, body []byte) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(strings.ToLower(l), "error") {
			bad = append(bad, l)
		}
	}
	if err != nil || len(bad) > 0 {
		t.Errorf("promtool check metrics on %s: %v; output:\n%s\n--- input ---\n%s", what, err, out, body)
		return
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("promtool check metrics on %s passed with output:\n%s", what, out)
	}
}

// prometheusConfig loads the example Prometheus configuration at path and
// points it at this test's exporter: 1s scrapes, the reflector addresses as
// the targets of job llama, and web as the address of the exporter that
// probes them and that job llama_exporter scrapes.
func prometheusConfig(t *testing.T, path string, targets []string, web string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	global, ok := cfg["global"].(map[string]any)
	if !ok {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"] = "1s"
	global["scrape_timeout"] = "1s"

	jobs, _ := cfg["scrape_configs"].([]any)
	found := map[string]bool{}
	for _, j := range jobs {
		job, ok := j.(map[string]any)
		if !ok {
			t.Fatalf("%s: scrape_configs entry is %T, not a map", path, j)
		}
		switch job["job_name"] {
		case "llama":
			found["llama"] = true
			job["static_configs"] = []any{map[string]any{"targets": stringsToAny(targets)}}
			relabels, _ := job["relabel_configs"].([]any)
			replaced := false
			for _, r := range relabels {
				rc, ok := r.(map[string]any)
				if ok && rc["target_label"] == "__address__" {
					if _, has := rc["replacement"]; !has {
						t.Fatalf("%s: job llama's relabel rule for __address__ has no replacement: %v", path, rc)
					}
					rc["replacement"] = web
					replaced = true
				}
			}
			if !replaced {
				t.Fatalf("%s: job llama has no relabel rule with target_label __address__", path)
			}
		case "llama_exporter":
			found["llama_exporter"] = true
			job["static_configs"] = []any{map[string]any{"targets": []any{web}}}
		}
	}
	for _, name := range []string{"llama", "llama_exporter"} {
		if !found[name] {
			t.Fatalf("%s: no scrape config with job_name %q", path, name)
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func stringsToAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// promSample is one element of an instant vector from the Prometheus API.
type promSample struct {
	Metric map[string]string
	Value  float64
}

func (s promSample) String() string { return fmt.Sprintf("%v => %v", s.Metric, s.Value) }

// promQuery runs an instant query through the Prometheus HTTP API.
func promQuery(c *http.Client, api, q string) ([]promSample, error) {
	body, err := get(c, api+"/api/v1/query?"+url.Values{"query": {q}}.Encode())
	if err != nil {
		return nil, err
	}
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("query %s: decoding %q: %v", q, body, err)
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("query %s: status %q: %s", q, resp.Status, resp.Error)
	}
	if resp.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: result type %q, want vector", q, resp.Data.ResultType)
	}
	var out []promSample
	for _, r := range resp.Data.Result {
		if len(r.Value) != 2 {
			return nil, fmt.Errorf("query %s: bad sample value %v", q, r.Value)
		}
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: bad sample value %v: %v", q, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// byInstance maps a query result by its instance label; it fails on
// duplicate instances.
func byInstance(s []promSample, err error) (map[string]float64, error) {
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(s))
	for _, x := range s {
		inst, ok := x.Metric["instance"]
		if !ok {
			return nil, fmt.Errorf("series without an instance label: %v", x)
		}
		if _, dup := out[inst]; dup {
			return nil, fmt.Errorf("two series with instance=%q: %v", inst, s)
		}
		out[inst] = x.Value
	}
	if len(out) == 0 {
		return nil, errors.New("no series")
	}
	return out, nil
}

// logTargets logs Prometheus's view of its scrape targets, to explain a
// failure.
func logTargets(t *testing.T, c *http.Client, api string) {
	t.Helper()
	body, err := get(c, api+"/api/v1/targets")
	if err != nil {
		t.Logf("prometheus targets: %v", err)
		return
	}
	var resp struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL  string `json:"scrapeUrl"`
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
				LastScrape string `json:"lastScrape"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Logf("prometheus targets: %v: %s", err, body)
		return
	}
	var lines []string
	for _, tg := range resp.Data.ActiveTargets {
		lines = append(lines, fmt.Sprintf("  %s health=%s last_scrape=%s last_error=%q", tg.ScrapeURL, tg.Health, tg.LastScrape, tg.LastError))
	}
	sort.Strings(lines)
	t.Logf("prometheus targets:\n%s", strings.Join(lines, "\n"))
}
