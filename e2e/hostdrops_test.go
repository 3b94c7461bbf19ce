//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// The lab of TestLossOnHostAlert: a prober host and a reflector host,
// each with its exporter, joined through a router host that runs none.
//
//	prober 198.18.0.1/30 -- 198.18.0.2/30 router 198.18.0.5/30 -- 198.18.0.6/30 reflector
const (
	hdProberAddr    = "198.18.0.1"
	hdReflectorAddr = "198.18.0.6"
	hdWebPort       = "5200"
	hdPromListen    = hdProberAddr + ":9090"
	// hdFor replaces LlamaLossOnHost's `for:` in the test's copy of the
	// rules.
	hdFor = 5 * time.Second
)

// TestLossOnHostAlert runs a real Prometheus with deploy/file_sd's
// configuration and deploy/prometheus/host-rules.yml (every `for:`
// shortened to hdFor in a copy) scraping the exporters of a prober host
// and a reflector host, both with --collector.host-drops. A DROP in the
// router's FORWARD chain, loss in the network, must not raise
// LlamaLossOnHost: no host dropped anything. An iptables DROP on the
// reflector host's INPUT for its reflector's port must raise it for the
// pair, naming the reflector host and netfilter_drop.
func TestLossOnHostAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two exporters and Prometheus for about a minute")
	}
	netns.Require(t)
	promBin := requireTool(t, "prometheus")
	requireTool(t, "promtool")
	requireTool(t, "iptables")
	requireTool(t, "sysctl")

	prober, router, refl := netns.New(t), netns.New(t), netns.New(t)
	netns.Link(t, prober, hdProberAddr+"/30", router, "198.18.0.2/30")
	netns.Link(t, router, "198.18.0.5/30", refl, hdReflectorAddr+"/30")
	router.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	prober.Run(t, "ip", "route", "add", "198.18.0.4/30", "via", "198.18.0.2")
	refl.Run(t, "ip", "route", "add", "198.18.0.0/30", "via", "198.18.0.5")

	dir := t.TempDir()
	bin := exporterBinary(t)
	cfgFile := filepath.Join(dir, "llama.yml")
	writeTestFile(t, cfgFile, "modules:\n  fast:\n    interval: 20ms\n    timeout: 500ms\n    window: 10s\n")
	reflProc := startProcess(t, "llama_exporter on the reflector host", "ip", "netns", "exec", refl.Name, bin,
		"--log.level=info", "--collector.host-drops",
		"--web.listen-address="+hdReflectorAddr+":"+hdWebPort,
		"--reflector.listen-address="+hdReflectorAddr+":862")
	proberProc := startProcess(t, "llama_exporter on the prober host", "ip", "netns", "exec", prober.Name, bin,
		"--log.level=info", "--collector.host-drops", "--no-reflector", "--config.file="+cfgFile,
		"--web.listen-address="+hdProberAddr+":"+hdWebPort)

	promCfg := hostDropsPrometheusConfig(t, dir, hostRulesCopy(t, dir))
	prom := startProcess(t, "prometheus", "ip", "netns", "exec", prober.Name, promBin,
		"--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+hdPromListen, "--log.level=warn")
	procs := []*process{reflProc, proberProc, prom}
	c := newHTTPClient(prober.DialContext())
	api := "http://" + hdPromListen
	waitFor(t, startTimeout, "prometheus to be ready", procs, func() error {
		_, err := get(c, api+"/-/ready")
		return err
	})
	t.Cleanup(func() {
		if t.Failed() {
			logTargets(t, c, api)
		}
	})
	query := func(q string) ([]promSample, error) { return promQuery(c, api, q) }

	// Both collectors run, and the pair's probes are answered.
	waitFor(t, 30*time.Second, "both exporters' collectors to run and the pair to have replies", procs, func() error {
		s, err := query(`llama_exporter_host_drops_enabled{job="llama_exporter"} == 1`)
		if err != nil {
			return err
		}
		if len(s) != 2 {
			enabled, _ := query(`llama_exporter_host_drops_enabled`)
			if len(enabled) == 2 {
				hostDropsUnavailable(t, procs)
			}
			return fmt.Errorf("hosts with the collector running: %v", s)
		}
		s, err = query(`llama_probe_packets_received_total{job="llama",source="prober",destination="reflector"} > 0`)
		if err != nil || len(s) != 1 {
			return fmt.Errorf("replies of the pair: %v %v", s, err)
		}
		return nil
	})

	// Loss in the network: the router drops the probes. The pair is lossy,
	// but no host dropped anything, so LlamaLossOnHost neither fires nor
	// is pending, for longer than its `for:`.
	fwd := []string{"FORWARD", "-p", "udp", "-d", hdReflectorAddr, "--dport", "862", "-j", "DROP"}
	router.Run(t, append([]string{"iptables", "-w", "-I"}, fwd...)...)
	waitLossy(t, query, procs)
	hold := time.Now().Add(hdFor + 3*time.Second)
	for time.Now().Before(hold) {
		if as := lossOnHostAlerts(t, c); len(as) > 0 {
			t.Fatalf("LlamaLossOnHost while only the network drops the probes:\n%s", describeAlerts(as))
		}
		if s, err := query(`source_reason:llama_host_drops_probe_in:rate5m`); err != nil || len(s) > 0 {
			t.Fatalf("host drops recorded while only the network drops the probes: %v %v", s, err)
		}
		time.Sleep(pollEvery)
	}
	if n := ruleCount(t, router, "FORWARD"); n == 0 {
		t.Fatal("the router's DROP rule counted no packet: the network loss was not made")
	}
	router.Run(t, append([]string{"iptables", "-w", "-D"}, fwd...)...)

	// The reflector host's firewall drops the probes: its kernel counts
	// them, and the alert names it.
	in := []string{"INPUT", "-p", "udp", "--dport", "862", "-j", "DROP"}
	refl.Run(t, append([]string{"iptables", "-w", "-I"}, in...)...)
	dropped := time.Now()
	var firing promAlert
	waitFor(t, hdFor+40*time.Second, "LlamaLossOnHost firing for prober -> reflector", procs, func() error {
		as := lossOnHostAlerts(t, c)
		for _, a := range as {
			if a.State == "firing" {
				firing = a
				if len(as) != 1 {
					return fmt.Errorf("want one LlamaLossOnHost, got\n%s", describeAlerts(as))
				}
				return nil
			}
		}
		return fmt.Errorf("alerts:\n%s", describeAlerts(as))
	})
	t.Logf("firing %v after the reflector host's DROP: %v %v", time.Since(dropped).Round(time.Second), firing.Labels, firing.Annotations)
	for k, want := range map[string]string{"source": "prober", "destination": "reflector", "host": "reflector",
		"reason": "netfilter_drop", "side": "destination"} {
		if got := firing.Labels[k]; got != want {
			t.Errorf("LlamaLossOnHost label %s = %q, want %q", k, got, want)
		}
	}
	for _, want := range []string{"reflector", "netfilter_drop"} {
		for _, ann := range []string{"summary", "description"} {
			if !strings.Contains(firing.Annotations[ann], want) {
				t.Errorf("LlamaLossOnHost %s %q does not name %q", ann, firing.Annotations[ann], want)
			}
		}
	}
	if n := ruleCount(t, refl, "INPUT"); n == 0 {
		t.Error("the reflector host's DROP rule counted no packet")
	}
}

// writeTestFile writes data to path.
func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostRulesCopy writes deploy/prometheus/host-rules.yml with every `for:`
// set to hdFor into dir, checks it with promtool and returns its path.
func hostRulesCopy(t *testing.T, dir string) string {
	t.Helper()
	const shipped = "../deploy/prometheus/host-rules.yml"
	raw, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	var doc ruleDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", shipped, err)
	}
	changed := doc.rewriteFor(t, shipped, func(time.Duration) time.Duration { return hdFor })
	if len(changed) == 0 {
		t.Fatalf("%s: no alert with a for:", shipped)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "host-rules.yml")
	writeTestFile(t, path, string(out))
	if msg, err := exec.Command(requireTool(t, "promtool"), "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the copy of %s: %v\n%s", shipped, err, msg)
	}
	t.Logf("rules: %s", strings.Join(changed, ", "))
	return path
}

// hostDropsPrometheusConfig rewrites deploy/file_sd/prometheus.yml for the
// lab: 1 s scrapes and evaluations, the rules, and file_sd files in dir
// that name the pair (module fast) and the two exporters by host.
func hostDropsPrometheusConfig(t *testing.T, dir, rules string) string {
	t.Helper()
	cfg := shippedFileSDConfig(t)
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
	cfg["rule_files"] = []any{rules}
	pairs := filepath.Join(dir, "pairs.json")
	exporters := filepath.Join(dir, "exporters.json")
	writeJSONFile(t, pairs, []map[string]any{{"targets": []string{hdReflectorAddr},
		"labels": map[string]string{"__tmp_llama_exporter": hdProberAddr + ":" + hdWebPort, "__param_module": "fast",
			"source": "prober", "destination": "reflector"}}})
	writeJSONFile(t, exporters, []map[string]any{
		{"targets": []string{hdProberAddr + ":" + hdWebPort}, "labels": map[string]string{"source": "prober"}},
		{"targets": []string{hdReflectorAddr + ":" + hdWebPort}, "labels": map[string]string{"source": "reflector"}}})
	files := map[string]string{"llama": pairs, "llama_exporter": exporters}
	jobs, _ := cfg["scrape_configs"].([]any)
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		if f, ok := files[name]; ok {
			job["file_sd_configs"] = []any{map[string]any{"files": []any{f}}}
			delete(files, name)
		}
	}
	if len(files) != 0 {
		t.Fatalf("%s: no jobs %v", shippedFileSD, files)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	writeTestFile(t, path, string(out))
	if msg, err := exec.Command(requireTool(t, "promtool"), "check", "config", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s\n--- config ---\n%s", err, msg, out)
	}
	return path
}

// writeJSONFile writes v as JSON to path.
func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, path, string(b))
}

// hostDropsUnavailable skips, or fails under CI=true, a test whose
// exporters could not start the collector, with the reason they logged.
func hostDropsUnavailable(t *testing.T, procs []*process) {
	t.Helper()
	var why []string
	for _, p := range procs {
		for _, l := range p.log.lines() {
			if strings.Contains(l, "host drops") {
				why = append(why, p.name+": "+l)
			}
		}
	}
	testlab.SkipOrFail(t, "the host-drop collector does not run here:\n%s", strings.Join(why, "\n"))
}

// waitLossy waits until Prometheus sees the pair's window loss.
func waitLossy(t *testing.T, query func(string) ([]promSample, error), procs []*process) {
	t.Helper()
	waitFor(t, 30*time.Second, "the pair's window loss ratio above 0.01", procs, func() error {
		s, err := query(`llama_probe_window_loss_ratio{job="llama",source="prober",destination="reflector"} > 0.01`)
		if err != nil || len(s) != 1 {
			return fmt.Errorf("%v %v", s, err)
		}
		return nil
	})
}

// lossOnHostAlerts returns LlamaLossOnHost's alerts, pending and firing.
func lossOnHostAlerts(t *testing.T, c *http.Client) []promAlert {
	t.Helper()
	as, err := promAlertsAt(c, hdPromListen)
	if err != nil {
		t.Fatal(err)
	}
	var out []promAlert
	for _, a := range as {
		if a.Labels["alertname"] == "LlamaLossOnHost" {
			out = append(out, a)
		}
	}
	return out
}

// ruleCount returns the packet counter of the first rule of chain in ns.
func ruleCount(t *testing.T, ns *netns.NS, chain string) int {
	t.Helper()
	out, err := ns.Command("iptables", "-w", "-L", chain, "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 {
		return 0
	}
	var n int
	fmt.Sscan(strings.Fields(lines[2])[0], &n)
	return n
}
