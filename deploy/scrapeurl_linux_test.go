package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"go.yaml.in/yaml/v3"
)

// TestScrapeURLsCarryModule runs the shipped scrape configurations through
// a real Prometheus and reads the scrape URL of every llama target from
// /api/v1/targets: a destination whose discovery gives it a module (old-1,
// module llama_legacy) must be scraped with module=llama_legacy, every
// other one with module=default. Prometheus 2.x lets a job's params
// overwrite a target's __param_module, so a config with
// params: {module: [default]} fails here. No exporter needs to run: the
// scrape URL is built before the first scrape.
func TestScrapeURLsCarryModule(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testlab.SkipOrFail(t, "prometheus is not on PATH (Debian: apt-get install prometheus): %v", err)
	}
	root := repoRoot(t)
	fileSD := filepath.Join(root, "deploy", "file_sd", "targets", "*.json")
	for _, tc := range []struct {
		rel string
		sd  string // the discovery replaced by file_sd, or ""
		lab sdLab  // what that discovery finds, and the modules wanted
	}{
		{rel: "deploy/file_sd/prometheus.yml"},
		{rel: "deploy/prometheus/prometheus-shard.yml"},
		{rel: "deploy/consul/prometheus.yml", sd: "consul_sd_configs", lab: consulLab()},
		{rel: "deploy/kubernetes/prometheus.yml", sd: "kubernetes_sd_configs", lab: kubernetesLab()},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			dir := t.TempDir()
			cfg := loadScrapeConfig(t, filepath.Join(root, tc.rel))
			if tc.sd != "" {
				sdFile := filepath.Join(dir, "sd.json")
				writeJSON(t, sdFile, tc.lab.groups)
				replaceSD(t, cfg, tc.sd, sdFile)
			}
			cfgFile := filepath.Join(dir, "prometheus.yml")
			out, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cfgFile, out, 0o644); err != nil {
				t.Fatal(err)
			}
			api := startPrometheus(t, promBin, cfgFile, dir)
			want := tc.lab.want
			if want == nil {
				want = fileSDWant(t, fileSD)
			}
			checkModules(t, api, want)
		})
	}
}

// sdLab is what a discovery finds, as file_sd target groups, and the
// module each destination must then be scraped with.
type sdLab struct {
	groups []map[string]any
	want   map[string]string
}

// consulLab is a Consul catalog as the relabeling sees it: a passing
// reflector registered with meta {module: llama_legacy} and one without.
func consulLab() sdLab {
	return sdLab{
		groups: []map[string]any{
			{"targets": []string{"198.18.1.5:8100"}, "labels": map[string]string{
				"__meta_consul_health": "passing", "__meta_consul_node": "old-1",
				"__meta_consul_service_metadata_module": "llama_legacy"}},
			{"targets": []string{"198.18.0.3:862"}, "labels": map[string]string{
				"__meta_consul_health": "passing", "__meta_consul_node": "web-2"}},
		},
		want: map[string]string{"old-1": "llama_legacy", "web-2": "default"},
	}
}

// kubernetesLab is two discovered nodes; no node carries a module.
func kubernetesLab() sdLab {
	return sdLab{
		groups: []map[string]any{
			{"targets": []string{"198.18.0.2:10250"}, "labels": map[string]string{
				"__meta_kubernetes_node_address_InternalIP": "198.18.0.2", "__meta_kubernetes_node_name": "node-a"}},
			{"targets": []string{"198.18.0.3:10250"}, "labels": map[string]string{
				"__meta_kubernetes_node_address_InternalIP": "198.18.0.3", "__meta_kubernetes_node_name": "node-b"}},
		},
		want: map[string]string{"node-a": "default", "node-b": "default"},
	}
}

// fileSDWant is the module each destination of the shipped file_sd files
// must be scraped with: its group's __param_module, or default.
func fileSDWant(t *testing.T, pattern string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no file_sd files %s: %v", pattern, err)
	}
	want := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var groups []struct {
			Labels map[string]string `json:"labels"`
		}
		if err := json.Unmarshal(data, &groups); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range groups {
			m := g.Labels["__param_module"]
			if m == "" {
				m = "default"
			}
			want[g.Labels["destination"]] = m
		}
	}
	if !strings.Contains(fmt.Sprint(want), "llama_legacy") {
		t.Fatalf("the file_sd files have no destination with a module: %v", want)
	}
	return want
}

// loadScrapeConfig decodes a Prometheus configuration and makes its rule
// and file_sd paths absolute; remote_write is dropped (nothing receives it).
func loadScrapeConfig(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	delete(cfg, "remote_write")
	abs := func(p any) any {
		if s, ok := p.(string); ok && !filepath.IsAbs(s) {
			return filepath.Join(filepath.Dir(path), s)
		}
		return p
	}
	if rf, ok := cfg["rule_files"].([]any); ok {
		for i := range rf {
			rf[i] = abs(rf[i])
		}
	}
	for _, job := range jobs(cfg) {
		fsd, _ := job["file_sd_configs"].([]any)
		for _, c := range fsd {
			cm, _ := c.(map[string]any)
			files, _ := cm["files"].([]any)
			for i := range files {
				files[i] = abs(files[i])
			}
		}
	}
	return cfg
}

// jobs returns the scrape configs of cfg.
func jobs(cfg map[string]any) []map[string]any {
	var out []map[string]any
	scs, _ := cfg["scrape_configs"].([]any)
	for _, sc := range scs {
		if job, ok := sc.(map[string]any); ok {
			out = append(out, job)
		}
	}
	return out
}

// replaceSD replaces the discovery sd of every job with a file_sd reading
// file, whose groups carry the labels that discovery would give.
func replaceSD(t *testing.T, cfg map[string]any, sd, file string) {
	t.Helper()
	replaced := false
	for _, job := range jobs(cfg) {
		if _, ok := job[sd]; ok {
			delete(job, sd)
			job["file_sd_configs"] = []any{map[string]any{"files": []any{file}}}
			replaced = true
		}
	}
	if !replaced {
		t.Fatalf("no job uses %s", sd)
	}
}

// writeJSON writes v as JSON to path.
func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startPrometheus runs Prometheus on cfgFile with its data under dir and
// returns its API's base URL once it is ready; the process is stopped at
// the end of the test.
func startPrometheus(t *testing.T, bin, cfgFile, dir string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", log)
		}
	})
	api := "http://" + addr
	waitUntil(t, 60*time.Second, "prometheus to be ready", done, func() error {
		_, err := httpGet(api + "/-/ready")
		return err
	})
	return api
}

// checkModules waits until Prometheus lists a llama target for every
// destination of want, and checks the module in each scrape URL.
func checkModules(t *testing.T, api string, want map[string]string) {
	t.Helper()
	var got map[string]string
	waitUntil(t, 60*time.Second, "the llama targets of every destination", nil, func() error {
		var err error
		got, err = llamaModules(api)
		if err != nil {
			return err
		}
		for dest := range want {
			if _, ok := got[dest]; !ok {
				return fmt.Errorf("no target for destination %s yet; have %v", dest, got)
			}
		}
		return nil
	})
	dests := make([]string, 0, len(got))
	for d := range got {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		if got[d] != want[d] {
			t.Errorf("destination %s is scraped with module=%q, want %q", d, got[d], want[d])
		}
	}
	t.Logf("modules by destination: %v", got)
}

// llamaModules maps each destination of job llama to the module query
// parameter of its scrape URL; two URLs for one destination must agree.
func llamaModules(api string) (map[string]string, error) {
	body, err := httpGet(api + "/api/v1/targets?state=active")
	if err != nil {
		return nil, err
	}
	var resp struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL  string            `json:"scrapeUrl"`
				ScrapePool string            `json:"scrapePool"`
				Labels     map[string]string `json:"labels"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("decoding targets: %v: %s", err, body)
	}
	out := map[string]string{}
	for _, tg := range resp.Data.ActiveTargets {
		if tg.ScrapePool != "llama" {
			continue
		}
		u, err := url.Parse(tg.ScrapeURL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		if len(q["module"]) != 1 || len(q["target"]) != 1 {
			return nil, fmt.Errorf("scrape URL %s: want one module and one target", tg.ScrapeURL)
		}
		d := tg.Labels["destination"]
		if prev, ok := out[d]; ok && prev != q.Get("module") {
			return nil, fmt.Errorf("destination %s scraped with module %s and %s", d, prev, q.Get("module"))
		}
		out[d] = q.Get("module")
	}
	return out, nil
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(u string) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	return body, nil
}

// waitUntil calls cond every 200ms until it returns nil; it fails the test
// with cond's last error after timeout, or as soon as exited is closed.
func waitUntil(t *testing.T, timeout time.Duration, what string, exited <-chan struct{}, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("waiting for %s: the process exited; last state: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %v", timeout, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
