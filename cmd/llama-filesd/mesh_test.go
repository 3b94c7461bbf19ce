package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite deploy/file_sd/targets and exporters.json from hosts.yml")

const threeHosts = `
hosts:
  - name: a
    address: 198.18.0.1
    labels: {dc: dc1, rack: r1}
  - name: b
    address: 198.18.0.2:8620
    exporter: 10.0.0.2:9200
    labels: {dc: dc1}
  - name: c
    address: "2001:db8::3"
`

func mustParse(t *testing.T, s string) *HostList {
	t.Helper()
	l, err := ParseHosts([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseHostsRejects(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty list", "hosts: []\n", "empty"},
		{"unknown key", "hosts:\n  - name: a\n    address: 1.2.3.4\n    adress: x\n", "adress"},
		{"unknown top-level key", "host:\n  - name: a\n", "host"},
		{"no name", "hosts:\n  - address: 1.2.3.4\n", "name"},
		{"name with slash", "hosts:\n  - name: a/b\n    address: 1.2.3.4\n", "name"},
		{"duplicate name", "hosts:\n  - name: a\n    address: 1.2.3.4\n  - name: a\n    address: 1.2.3.5\n", "twice"},
		{"no address", "hosts:\n  - name: a\n", "address: missing"},
		{"address with path", "hosts:\n  - name: a\n    address: 1.2.3.4/24\n", "address"},
		{"address port 0", "hosts:\n  - name: a\n    address: 1.2.3.4:0\n", "port"},
		{"address port too big", "hosts:\n  - name: a\n    address: 1.2.3.4:65536\n", "port"},
		{"exporter without port", "hosts:\n  - name: a\n    address: 1.2.3.4\n    exporter: 1.2.3.4\n", "exporter"},
		{"bad role", "hosts:\n  - name: a\n    address: 1.2.3.4\n    role: probe\n", "role"},
		{"bad module", "hosts:\n  - name: a\n    address: 1.2.3.4\n    module: a&b\n", "module"},
		{"bad label name", "hosts:\n  - name: a\n    address: 1.2.3.4\n    labels: {a-b: x}\n", "label"},
		{"label starting with __", "hosts:\n  - name: a\n    address: 1.2.3.4\n    labels: {__x: y}\n", "label"},
		{"reserved label ip", "hosts:\n  - name: a\n    address: 1.2.3.4\n    labels: {ip: y}\n", "reserved"},
		{"not YAML", "hosts: [\n", "yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHosts([]byte(tc.in))
			if err == nil {
				t.Fatalf("accepted %q", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestBuildFullMesh(t *testing.T) {
	m := Build(mustParse(t, threeHosts), Options{ExporterPort: 5200})
	if !slices.Equal(m.Sources, []string{"a", "b", "c"}) {
		t.Fatalf("sources %v", m.Sources)
	}
	if n := len(m.All()); n != 6 {
		t.Fatalf("%d pairs for 3 hosts, want 3 x 2 = 6", n)
	}
	for _, s := range m.Sources {
		for _, g := range m.Pairs[s] {
			if g.Labels["source"] != s {
				t.Errorf("group in %s's list has source %q", s, g.Labels["source"])
			}
			if g.Labels["destination"] == s {
				t.Errorf("%s probes itself", s)
			}
			if len(g.Targets) != 1 {
				t.Errorf("group with %d targets", len(g.Targets))
			}
		}
	}
	// a -> b: b's address as given, a's exporter from its address.
	ab := m.Pairs["a"][0]
	want := TargetGroup{
		Targets: []string{"198.18.0.2:8620"},
		Labels: map[string]string{
			"source": "a", "destination": "b", "__tmp_llama_exporter": "198.18.0.1:5200",
			"src_dc": "dc1", "src_rack": "r1", "dst_dc": "dc1",
		},
	}
	if fmt.Sprint(ab) != fmt.Sprint(want) {
		t.Errorf("a -> b:\n got %v\nwant %v", ab, want)
	}
	// b's exporter is the one it names; c's is derived from a bare IPv6.
	if got := m.Pairs["b"][0].Labels["__tmp_llama_exporter"]; got != "10.0.0.2:9200" {
		t.Errorf("b's exporter %q", got)
	}
	if got := m.Pairs["c"][0].Labels["__tmp_llama_exporter"]; got != "[2001:db8::3]:5200" {
		t.Errorf("c's exporter %q", got)
	}
	if got := m.Pairs["a"][1].Targets[0]; got != "2001:db8::3" {
		t.Errorf("c as a target: %q", got)
	}
	exp := []string{}
	for _, g := range m.Exporters {
		exp = append(exp, g.Targets[0]+" "+g.Labels["source"])
	}
	if !slices.Equal(exp, []string{"198.18.0.1:5200 a", "10.0.0.2:9200 b", "[2001:db8::3]:5200 c"}) {
		t.Errorf("exporters %v", exp)
	}
}

func TestBuildOptionsAndRoles(t *testing.T) {
	list := mustParse(t, `
hosts:
  - {name: src, address: 198.18.0.1, role: source}
  - {name: both, address: 198.18.0.2}
  - {name: old, address: 198.18.0.3, role: destination, module: llama_legacy}
  - {name: router, address: "2001:db8::1", role: destination}
`)
	m := Build(list, Options{ExporterPort: 15200, ReflectorPort: 8620, Module: "dc_mesh"})
	if !slices.Equal(m.Sources, []string{"both", "src"}) {
		t.Fatalf("sources %v, want both and src", m.Sources)
	}
	got := map[string]string{}
	for _, g := range m.All() {
		got[g.Labels["source"]+"->"+g.Labels["destination"]] = g.Targets[0] + " " + g.Labels["__param_module"]
	}
	want := map[string]string{
		"both->old":    "198.18.0.3:8620 llama_legacy",
		"both->router": "[2001:db8::1]:8620 dc_mesh",
		"src->both":    "198.18.0.2:8620 dc_mesh",
		"src->old":     "198.18.0.3:8620 llama_legacy",
		"src->router":  "[2001:db8::1]:8620 dc_mesh",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pairs:\n got %v\nwant %v", got, want)
	}
	// Without a module anywhere, no __param_module label.
	m = Build(mustParse(t, threeHosts), Options{ExporterPort: 5200})
	for _, g := range m.All() {
		if _, ok := g.Labels["__param_module"]; ok {
			t.Errorf("__param_module set without a module: %v", g)
		}
	}
}

// TestEncode checks that both formats decode back to the same groups, in
// the shape Prometheus's file_sd reads (a list of targets + labels).
func TestEncode(t *testing.T) {
	groups := Build(mustParse(t, threeHosts), Options{ExporterPort: 5200}).All()
	for _, format := range []string{"json", "yaml"} {
		data, err := Encode(groups, format)
		if err != nil {
			t.Fatal(err)
		}
		var back []TargetGroup
		if format == "json" {
			err = json.Unmarshal(data, &back)
		} else {
			err = yaml.Unmarshal(data, &back)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, data)
		}
		if fmt.Sprint(back) != fmt.Sprint(groups) {
			t.Errorf("%s round trip differs", format)
		}
	}
	empty, err := Encode([]TargetGroup{}, "json")
	if err != nil || strings.TrimSpace(string(empty)) != "[]" {
		t.Errorf("empty list encodes as %q, %v", empty, err)
	}
	if _, err := Encode(nil, "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunWritesDirAndPrunes(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts.yml")
	if err := os.WriteFile(hosts, []byte(threeHosts), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "targets")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale file of ours and a file that is not ours.
	for _, n := range []string{"llama_gone.json", "other.json"} {
		if err := os.WriteFile(filepath.Join(out, n), []byte("[]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runCmd(t, "--hosts.file="+hosts, "--output.dir="+out, "--output.exporters-file="+filepath.Join(dir, "exporters.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "3 hosts, 3 sources, 6 pairs") || !strings.Contains(stdout, "llama_gone.json (removed)") {
		t.Errorf("stdout:\n%s", stdout)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"llama_a.json", "llama_b.json", "llama_c.json", "other.json"}) {
		t.Errorf("directory holds %v", names)
	}
	var groups []TargetGroup
	data, _ := os.ReadFile(filepath.Join(out, "llama_a.json"))
	if err := json.Unmarshal(data, &groups); err != nil || len(groups) != 2 {
		t.Errorf("llama_a.json: %v, %d groups", err, len(groups))
	}
	// A second run with the same input rewrites nothing.
	code, stdout, stderr = runCmd(t, "--hosts.file="+hosts, "--output.dir="+out, "--output.exporters-file="+filepath.Join(dir, "exporters.json"))
	if code != 0 || strings.Contains(stdout, "wrote") {
		t.Errorf("second run: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestRunSingleFileYAML(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts.yml")
	if err := os.WriteFile(hosts, []byte(threeHosts), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "mesh.yml")
	code, _, stderr := runCmd(t, "--hosts.file="+hosts, "--output.file="+file, "--output.format=yaml", "--module=default")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var groups []TargetGroup
	data, _ := os.ReadFile(file)
	if err := yaml.Unmarshal(data, &groups); err != nil || len(groups) != 6 {
		t.Fatalf("mesh.yml: %v, %d groups\n%s", err, len(groups), data)
	}
	if groups[0].Labels["__param_module"] != "default" {
		t.Errorf("--module not applied: %v", groups[0])
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode of the written file: %v %v", fi.Mode(), err)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("hosts:\n  - name: a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--output.file=x"}, 2, "hosts.file"},
		{[]string{"--hosts.file=" + bad}, 2, "--output.file"},
		{[]string{"--hosts.file=" + bad, "--output.file=" + filepath.Join(dir, "o.json")}, 1, "address"},
		{[]string{"--hosts.file=" + filepath.Join(dir, "missing.yml"), "--output.file=x"}, 1, "missing.yml"},
		{[]string{"--hosts.file=" + bad, "--output.file=x", "--output.format=xml"}, 2, "json,yaml"},
	}
	for _, tc := range tests {
		code, _, stderr := runCmd(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if code, stdout, _ := runCmd(t, "--version"); code != 0 || !strings.Contains(stdout, "llama-filesd") {
		t.Errorf("--version: exit %d, %q", code, stdout)
	}
}

// TestDeployExample regenerates the example files of deploy/file_sd from
// its hosts.yml and compares them with the committed ones (go test -update
// rewrites them). promtool check config, run by the deploy package's tests
// on deploy/file_sd/prometheus.yml, then validates them as file_sd files.
func TestDeployExample(t *testing.T) {
	exampleDir := filepath.Join("..", "..", "deploy", "file_sd")
	tmp := t.TempDir()
	outDir := filepath.Join(tmp, "targets")
	if *update {
		outDir = filepath.Join(exampleDir, "targets")
		tmp = exampleDir
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, "--hosts.file="+filepath.Join(exampleDir, "hosts.yml"),
		"--output.dir="+outDir, "--output.exporters-file="+filepath.Join(tmp, "exporters.json"),
		"--output.devices-rules="+filepath.Join(tmp, "devices.rules.yml"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if *update {
		return
	}
	compare := func(rel string) {
		got, err := os.ReadFile(filepath.Join(tmp, rel))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(exampleDir, rel))
		if err != nil {
			t.Fatalf("%v (go test ./cmd/llama-filesd/ -run TestDeployExample -update writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/file_sd/%s is out of date: go test ./cmd/llama-filesd/ -run TestDeployExample -update", rel)
		}
	}
	compare("exporters.json")
	compare("devices.rules.yml")
	generated, _ := os.ReadDir(outDir)
	committed, _ := os.ReadDir(filepath.Join(exampleDir, "targets"))
	if len(generated) != len(committed) {
		t.Errorf("deploy/file_sd/targets holds %d files, llama-filesd writes %d", len(committed), len(generated))
	}
	for _, e := range generated {
		compare(filepath.Join("targets", e.Name()))
	}
}

// racks is three racks of three hosts; the first host of racks a and b and
// the first two of rack c are representatives.
func racks(t *testing.T) *HostList {
	t.Helper()
	var b strings.Builder
	b.WriteString("hosts:\n")
	n := 0
	for _, rack := range []string{"a", "b", "c"} {
		for i := 1; i <= 3; i++ {
			n++
			rep := i == 1 || (rack == "c" && i == 2)
			fmt.Fprintf(&b, "  - {name: %s%d, address: 198.18.1.%d, representative: %v, labels: {rack: %s}}\n", rack, i, n, rep, rack)
		}
	}
	return mustParse(t, b.String())
}

func TestBuildGroups(t *testing.T) {
	list := racks(t)
	m := Build(list, Options{ExporterPort: 5200, GroupLabel: "rack"})
	var pairs []string
	for _, g := range m.All() {
		pairs = append(pairs, g.Labels["source"]+"->"+g.Labels["destination"])
	}
	// 3 racks x 3 x 2 inside, plus the 10 ordered pairs of representatives
	// in different racks (a1, b1, c1, c2).
	if len(pairs) != 18+10 {
		t.Fatalf("%d pairs, want 28: %v", len(pairs), pairs)
	}
	for _, want := range []string{"a2->a3", "a1->b1", "a1->c2", "c2->b1", "c1->a1"} {
		if !slices.Contains(pairs, want) {
			t.Errorf("missing pair %s", want)
		}
	}
	for _, absent := range []string{"a2->b1", "a1->b2", "c1->c1", "c1->c2x"} {
		if slices.Contains(pairs, absent) {
			t.Errorf("unexpected pair %s", absent)
		}
	}
	if isolated, err := CheckGroups(list, "rack"); err != nil || len(isolated) != 0 {
		t.Errorf("CheckGroups: %v, %v", isolated, err)
	}
	// Without the flag, the full mesh: 9 x 8.
	if n := len(Build(list, Options{ExporterPort: 5200}).All()); n != 72 {
		t.Errorf("full mesh of 9 hosts: %d pairs, want 72", n)
	}
}

func TestCheckGroups(t *testing.T) {
	list := mustParse(t, `
hosts:
  - {name: a1, address: 198.18.1.1, representative: true, labels: {rack: a}}
  - {name: b1, address: 198.18.1.2, labels: {rack: b}}
  - {name: c1, address: 198.18.1.3, labels: {rack: c}}
`)
	isolated, err := CheckGroups(list, "rack")
	if err != nil || !slices.Equal(isolated, []string{"b", "c"}) {
		t.Errorf("CheckGroups = %v, %v; want racks b and c isolated", isolated, err)
	}
	if _, err := CheckGroups(list, "dc"); err == nil || !strings.Contains(err.Error(), `"dc"`) {
		t.Errorf("CheckGroups with a label no host has: %v", err)
	}
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts.yml")
	if err := os.WriteFile(hosts, []byte("hosts:\n  - {name: a1, address: 198.18.1.1, labels: {rack: a}}\n  - {name: b1, address: 198.18.1.2, labels: {rack: b}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "--hosts.file="+hosts, "--output.file="+filepath.Join(dir, "o.json"), "--mesh.group-label=rack")
	if code != 0 || !strings.Contains(stderr, "no representative in rack [a b]") || !strings.Contains(stdout, "0 pairs") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runCmd(t, "--hosts.file="+hosts, "--output.file="+filepath.Join(dir, "o.json"), "--mesh.group-label=dc"); code != 1 || !strings.Contains(stderr, "dc") {
		t.Errorf("missing group label: exit %d, %q", code, stderr)
	}
}
