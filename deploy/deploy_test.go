package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the repository root: the parent of this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

// promtool returns the path of promtool, or skips or fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testlab.SkipOrFail(t, "promtool is not on PATH (Debian: apt-get install prometheus): %v", err)
	}
	return p
}

// runPromtool runs promtool in dir and returns its combined output.
func runPromtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// yamlFile is a YAML file of the repository, decoded.
type yamlFile struct {
	rel  string // path relative to the repository root, with slashes
	path string
	docs []map[string]any // documents that are mappings (others are nil)
	err  error            // the first decoding error
}

var (
	yamlOnce  sync.Once
	yamlFiles []*yamlFile
	yamlErr   error
)

// repoYAMLFiles decodes every .yml and .yaml file under the repository
// root, skipping .git and the build output directories.
func repoYAMLFiles(t *testing.T) []*yamlFile {
	t.Helper()
	root := repoRoot(t)
	yamlOnce.Do(func() {
		yamlErr = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				switch d.Name() {
				case ".git", ".build", ".tarballs", "node_modules", "vendor":
					return filepath.SkipDir
				}
				return nil
			}
			ext := filepath.Ext(path)
			if ext != ".yml" && ext != ".yaml" {
				return nil
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			f := &yamlFile{rel: filepath.ToSlash(rel), path: path}
			f.docs, f.err = decodeYAML(path)
			yamlFiles = append(yamlFiles, f)
			return nil
		})
	})
	if yamlErr != nil {
		t.Fatalf("walking %s: %v", root, yamlErr)
	}
	return yamlFiles
}

// decodeYAML decodes every document of a YAML file.
func decodeYAML(path string) ([]map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		var m map[string]any
		if node.Kind == yaml.DocumentNode && len(node.Content) == 1 && node.Content[0].Kind == yaml.MappingNode {
			if err := node.Decode(&m); err != nil {
				return docs, err
			}
		}
		docs = append(docs, m)
	}
}

func isTestdata(rel string) bool {
	return slices.Contains(strings.Split(rel, "/"), "testdata")
}

// only returns the file's document when it has exactly one.
func (f *yamlFile) only() map[string]any {
	if len(f.docs) != 1 {
		return nil
	}
	return f.docs[0]
}

func (f *yamlFile) isPrometheusConfig() bool {
	_, ok := f.only()["scrape_configs"]
	return ok
}

func (f *yamlFile) isRuleFile() bool {
	_, ok := f.only()["groups"]
	return ok
}

func (f *yamlFile) isRuleTest() bool {
	m := f.only()
	_, rules := m["rule_files"]
	_, tests := m["tests"]
	return rules && tests
}

// TestYAMLFilesParse decodes every YAML file of the repository. Files under
// testdata may be broken on purpose: their errors are only logged.
func TestYAMLFilesParse(t *testing.T) {
	files := repoYAMLFiles(t)
	var seen []string
	for _, f := range files {
		seen = append(seen, f.rel)
		switch {
		case f.err != nil && isTestdata(f.rel):
			t.Logf("%s (testdata) is not valid YAML, which may be deliberate: %v", f.rel, f.err)
		case f.err != nil:
			t.Errorf("%s: %v", f.rel, f.err)
		case len(f.docs) == 0:
			t.Errorf("%s: no YAML document", f.rel)
		}
	}
	for _, want := range []string{
		"example.yml", "examples/prometheus.yml", "deploy/prometheus/rules.yml",
		"deploy/prometheus/rules_test.yml", "deploy/kubernetes/daemonset.yml",
	} {
		if !slices.Contains(seen, want) {
			t.Errorf("the walk did not find %s; found %v", want, seen)
		}
	}
	t.Logf("%d YAML files decoded", len(files))
}

// unsupportedSD matches promtool's complaint about a service discovery that
// its build leaves out (Debian builds Prometheus without the Kubernetes and
// Consul ones, among others).
var unsupportedSD = regexp.MustCompile(`field (\w+_sd_configs) not found in type config\.ScrapeConfig`)

// TestPrometheusConfigs runs promtool check config on every Prometheus
// configuration of the repository (every YAML file with scrape_configs
// outside testdata), and also with --agent on the ones meant for agent mode
// (remote_write and no rules). When this promtool lacks a service
// discovery, the configuration is checked again with that discovery
// replaced by static_configs, after a structural check of its own.
func TestPrometheusConfigs(t *testing.T) {
	files := repoYAMLFiles(t)
	root := repoRoot(t)
	var checked []string
	for _, f := range files {
		if f.err != nil || isTestdata(f.rel) {
			continue
		}
		base := filepath.Base(f.rel)
		if !f.isPrometheusConfig() {
			// A file named like a Prometheus config must be one, unless it
			// is a Kubernetes manifest.
			if strings.HasPrefix(base, "prometheus") && (strings.HasPrefix(f.rel, "deploy/") || strings.HasPrefix(f.rel, "examples/")) {
				if len(f.docs) == 0 || f.docs[0]["apiVersion"] == nil {
					t.Errorf("%s is named like a Prometheus configuration but has no scrape_configs", f.rel)
				}
			}
			continue
		}
		checked = append(checked, f.rel)
		m := f.only()
		_, remoteWrite := m["remote_write"]
		_, rules := m["rule_files"]
		modes := [][]string{nil}
		if remoteWrite && !rules {
			modes = append(modes, []string{"--agent"})
		}
		for _, mode := range modes {
			name := f.rel + strings.Join(append([]string{""}, mode...), " ")
			t.Run(name, func(t *testing.T) {
				args := append(append([]string{"check", "config"}, mode...), f.path)
				out, err := runPromtool(t, root, args...)
				if err == nil {
					return
				}
				missing := unsupportedSD.FindAllStringSubmatch(out, -1)
				if len(missing) == 0 {
					t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				var sds []string
				for _, mm := range missing {
					if !slices.Contains(sds, mm[1]) {
						sds = append(sds, mm[1])
					}
				}
				t.Logf("this promtool has no %s; checking them here and the rest with promtool", strings.Join(sds, ", "))
				checkSDConfigs(t, m, sds)
				tmp := filepath.Join(t.TempDir(), filepath.Base(f.path))
				if err := os.WriteFile(tmp, withoutSD(t, f.path, sds), 0o644); err != nil {
					t.Fatal(err)
				}
				args[len(args)-1] = tmp
				if out, err := runPromtool(t, root, args...); err != nil {
					t.Fatalf("promtool %s (with %s replaced by static_configs): %v\n%s", strings.Join(args, " "), strings.Join(sds, ", "), err, out)
				}
			})
		}
	}
	for _, want := range []string{
		"examples/prometheus.yml", "deploy/file_sd/prometheus.yml", "deploy/prometheus/prometheus-shard.yml",
		"deploy/kubernetes/prometheus.yml", "deploy/consul/prometheus.yml",
	} {
		if !slices.Contains(checked, want) {
			t.Errorf("%s was not checked as a Prometheus configuration; checked %v", want, checked)
		}
	}
}

// withoutSD returns the configuration at path with each of sds replaced by
// a static_configs entry, and relative rule and file_sd paths made absolute
// so that the copy can be checked from anywhere.
func withoutSD(t *testing.T, path string, sds []string) []byte {
	t.Helper()
	var cfg map[string]any
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	abs := func(p any) any {
		s, ok := p.(string)
		if !ok || filepath.IsAbs(s) {
			return p
		}
		return filepath.Join(filepath.Dir(path), s)
	}
	if rf, ok := cfg["rule_files"].([]any); ok {
		for i := range rf {
			rf[i] = abs(rf[i])
		}
	}
	scs, _ := cfg["scrape_configs"].([]any)
	for _, sc := range scs {
		job, ok := sc.(map[string]any)
		if !ok {
			continue
		}
		for _, sd := range sds {
			if _, ok := job[sd]; ok {
				delete(job, sd)
				static, _ := job["static_configs"].([]any)
				job["static_configs"] = append(static, map[string]any{"targets": []any{"placeholder.invalid:80"}})
			}
		}
		if fsd, ok := job["file_sd_configs"].([]any); ok {
			for _, c := range fsd {
				if cm, ok := c.(map[string]any); ok {
					if files, ok := cm["files"].([]any); ok {
						for i := range files {
							files[i] = abs(files[i])
						}
					}
				}
			}
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSDConfigs checks what it can of service discoveries promtool could
// not: Kubernetes roles and Consul service lists.
func checkSDConfigs(t *testing.T, cfg map[string]any, sds []string) {
	t.Helper()
	roles := []string{"node", "pod", "service", "endpoints", "endpointslice", "ingress"}
	scs, _ := cfg["scrape_configs"].([]any)
	for _, sc := range scs {
		job, _ := sc.(map[string]any)
		for _, sd := range sds {
			list, present := job[sd]
			if !present {
				continue
			}
			entries, ok := list.([]any)
			if !ok || len(entries) == 0 {
				t.Errorf("job %v: %s is not a non-empty list", job["job_name"], sd)
				continue
			}
			for _, e := range entries {
				em, ok := e.(map[string]any)
				if !ok {
					t.Errorf("job %v: %s entry is not a mapping", job["job_name"], sd)
					continue
				}
				switch sd {
				case "kubernetes_sd_configs":
					if role, _ := em["role"].(string); !slices.Contains(roles, role) {
						t.Errorf("job %v: kubernetes_sd_configs role %q is not one of %v", job["job_name"], em["role"], roles)
					}
				case "consul_sd_configs":
					services, ok := em["services"].([]any)
					if !ok || len(services) == 0 {
						t.Errorf("job %v: consul_sd_configs without a services list", job["job_name"])
					}
					if _, ok := em["server"].(string); !ok {
						t.Errorf("job %v: consul_sd_configs without a server", job["job_name"])
					}
				}
			}
		}
	}
}

// TestRuleFiles runs promtool check rules on every rule file and promtool
// test rules on every rule test file of the repository.
func TestRuleFiles(t *testing.T) {
	files := repoYAMLFiles(t)
	var rules, tests []string
	for _, f := range files {
		if f.err != nil || isTestdata(f.rel) {
			continue
		}
		switch {
		case f.isRuleFile():
			rules = append(rules, f.rel)
			t.Run("check "+f.rel, func(t *testing.T) {
				if out, err := runPromtool(t, filepath.Dir(f.path), "check", "rules", filepath.Base(f.path)); err != nil {
					t.Fatalf("promtool check rules %s: %v\n%s", f.rel, err, out)
				}
			})
		case f.isRuleTest():
			tests = append(tests, f.rel)
			t.Run("test "+f.rel, func(t *testing.T) {
				out, err := runPromtool(t, filepath.Dir(f.path), "test", "rules", filepath.Base(f.path))
				if err != nil {
					t.Fatalf("promtool test rules %s: %v\n%s", f.rel, err, out)
				}
				t.Logf("promtool test rules %s:\n%s", f.rel, out)
			})
		}
	}
	if !slices.Contains(rules, "deploy/prometheus/rules.yml") || !slices.Contains(tests, "deploy/prometheus/rules_test.yml") {
		t.Errorf("rules.yml or rules_test.yml not found: rule files %v, tests %v", rules, tests)
	}
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// shippedRuleFiles are the rule files under deploy/prometheus: per pair,
// for the whole fleet, and for the hosts' own drops.
var shippedRuleFiles = []string{"rules.yml", "fleet-rules.yml", "host-rules.yml"}

// loadRules reads the groups of every shipped rule file.
func loadRules(t *testing.T) *ruleFile {
	t.Helper()
	var all ruleFile
	for _, name := range shippedRuleFiles {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "prometheus", name))
		if err != nil {
			t.Fatal(err)
		}
		var rf ruleFile
		if err := yaml.Unmarshal(data, &rf); err != nil {
			t.Fatal(err)
		}
		all.Groups = append(all.Groups, rf.Groups...)
	}
	return &all
}

// recordedNames are the names the shipped recording rules produce, and
// llama_device_info, which llama-filesd's device rule file records.
func recordedNames(t *testing.T) []string {
	names := []string{"llama_device_info"}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names = append(names, r.Record)
			}
		}
	}
	return names
}

// TestRulesUseKnownMetrics checks that every expression of rules.yml reads
// only series the exporter exposes or the rules record, and that the rules
// the issue asks for exist.
func TestRulesUseKnownMetrics(t *testing.T) {
	rf := loadRules(t)
	known := knownMetrics(recordedNames(t)...)
	var alerts, records []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			names, err := metricNames(r.Expr)
			if err != nil {
				t.Errorf("%s%s: %v", r.Alert, r.Record, err)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("rule %s%s uses %s, which neither the exporter exposes nor a rule records", r.Alert, r.Record, n)
				}
			}
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
			} else {
				records = append(records, r.Record)
			}
		}
	}
	for _, want := range []string{"LlamaPacketLoss", "LlamaTargetUnreachable", "LlamaRTTAboveBaseline", "LlamaReflectorThrottling", "LlamaConfigReloadFailed", "LlamaLinkLoss", "LlamaHostUnreachable"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s missing from rules.yml", want)
		}
	}
	for _, want := range []string{"llama_packet_loss_percentage", "llama_rtt", "llama_packets_sent", "llama_packets_lost"} {
		if !slices.Contains(records, want) {
			t.Errorf("recording rule %s missing from rules.yml", want)
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Transformations []struct {
		ID      string         `json:"id"`
		Options map[string]any `json:"options"`
	} `json:"transformations"`
	Panels []panel `json:"panels"` // collapsed rows
}

// allPanels flattens panels and the panels of collapsed rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// labelValues matches a Grafana Prometheus variable query
// label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// TestDashboard checks deploy/grafana/llama.json: its structure, that every
// PromQL expression (panel targets and variable queries) is valid for
// promtool once Grafana's variables are substituted, and that it only uses
// series the exporter exposes or rules.yml records.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "llama.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("llama.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard without uid or title")
	}

	vars := map[string]bool{}
	type query struct{ where, expr string }
	var queries []query
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		// The query is a string or an object with a query field.
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Errorf("variable %s: query is neither a string nor an object: %s", v.Name, v.Query)
				continue
			}
			q = obj.Query
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		queries = append(queries, query{"variable " + v.Name, m[1]})
	}
	if !vars["datasource"] {
		t.Errorf("no datasource variable")
	}

	ids := map[int]string{}
	kinds := map[string]bool{}
	var matrices []string
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		kinds[p.Type] = true
		if uid, _ := p.Datasource["uid"].(string); uid != "${datasource}" {
			t.Errorf("panel %q: datasource uid %q, want ${datasource}", p.Title, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: target %s has no expr", p.Title, tg.RefID)
				continue
			}
			queries = append(queries, query{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
		}
		for _, tr := range p.Transformations {
			if tr.ID == "groupingToMatrix" {
				if tr.Options["rowField"] != "source" || tr.Options["columnField"] != "destination" || tr.Options["valueField"] != "Value" {
					t.Errorf("panel %q: matrix options %v, want rows source, columns destination, values Value", p.Title, tr.Options)
				}
				matrices = append(matrices, p.Targets[0].Expr)
			}
		}
	}
	for _, want := range []string{"table", "heatmap", "timeseries"} {
		if !kinds[want] {
			t.Errorf("no %s panel", want)
		}
	}
	for _, want := range []string{"llama_probe_window_loss_ratio", `quantile="0.5"`, `quantile="0.99"`} {
		if !slices.ContainsFunc(matrices, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("no matrix panel on %s; matrices: %q", want, matrices)
		}
	}
	var all strings.Builder
	for _, q := range queries {
		all.WriteString(q.expr + "\n")
	}
	for _, want := range []string{
		"llama_probe_rtt_seconds_bucket", "llama_probe_flow_window_loss_ratio",
		"llama_reflector_packets_received_total", "llama_reflector_packets_throttled_total",
		"llama_reflector_packets_bad_data_total",
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("no panel uses %s", want)
		}
	}

	known := knownMetrics(recordedNames(t)...)
	for _, q := range queries {
		for _, v := range grafanaVarNames(q.expr) {
			if !strings.HasPrefix(v, "__") && !vars[v] {
				t.Errorf("%s uses $%s, which is not a dashboard variable", q.where, v)
			}
		}
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %v in %s", q.where, err, q.expr)
		}
		if len(names) == 0 {
			t.Errorf("%s selects no metric: %s", q.where, q.expr)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("%s uses %s, which neither the exporter exposes nor rules.yml records", q.where, n)
			}
		}
	}

	// promtool validates PromQL through a rule file whose recording rules
	// are the dashboard's expressions.
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	type group struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	}
	g := group{Name: "dashboard"}
	var index strings.Builder
	for i, q := range queries {
		g.Rules = append(g.Rules, rule{Record: fmt.Sprintf("dashboard_expr_%d", i), Expr: substituteGrafanaVars(q.expr)})
		fmt.Fprintf(&index, "  dashboard_expr_%d: %s: %s\n", i, q.where, q.expr)
	}
	out, err := yaml.Marshal(map[string][]group{"groups": {g}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := runPromtool(t, filepath.Dir(path), "check", "rules", path); err != nil {
		t.Fatalf("promtool check rules on the dashboard's expressions: %v\n%s\nexpressions:\n%s", err, msg, index.String())
	}
	t.Logf("%d expressions checked by promtool", len(queries))
}
