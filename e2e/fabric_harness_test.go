//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// The fleet harness on the simulated fabric: one exporter per host, file_sd
// targets from llama-filesd, one Prometheus with the shipped rules (their
// `for:` shortened), one Alertmanager with the shipped inhibit rules and a
// webhook receiver in the test, and a monitor of what they fire.

const (
	// fabricFleetFor is the `for:` of the fleet alerts in the test: every
	// `for:` of the shipped rules is shortened by the same amount, so that
	// 60 s faults are named within 2 minutes while the alerts fire in the
	// order they would in production (detection takes the same real time,
	// so dividing every `for:` would let per-pair alerts fire before the
	// fleet alert that inhibits them, which production never sees).
	// LLAMA_FABRIC_FOR_SCALE=N divides every `for:` by N instead.
	fabricFleetFor = 12 * time.Second
	// fabricScrapeInterval is Prometheus's scrape and evaluation interval.
	fabricScrapeInterval = 5 * time.Second
	// fabricModule is the module every pair is probed with.
	fabricModule = `modules:
  fabric:
    prober: stamp
    interval: 100ms
    timeout: 1s
    window: 30s
    flows: 8
    source_port_range: "40000-40007"
    flow_metrics: true
    path_trace:
      interval: 10s
      max_hops: 8
      on_loss: true
`
	exporterPort = "5200"
	promListen   = mgmtAddr + ":9090"
	amListen     = mgmtAddr + ":9093"
)

// The alerts of the fleet rules, and the per-pair alerts they inhibit.
const (
	alertLink = "LlamaLinkLoss"
	alertHost = "LlamaHostUnreachable"
)

var perPairAlerts = []string{"LlamaPacketLoss", "LlamaTargetUnreachable", "LlamaSuspectLink"}

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{}
)

// goTool builds the command in the repository directory pkg (relative to
// the root, like "cmd/llama-filesd") once per test binary and returns the
// binary's path.
func goTool(t *testing.T, pkg string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[pkg]; ok {
		return p
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	cmd := exec.Command(goCmd, "build", "-o", out, "./"+pkg)
	cmd.Dir = ".."
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./%s: %v\n%s", pkg, err, msg)
	}
	toolPaths[pkg] = out
	return out
}

// fleet is the harness running on a fabric.
type fleet struct {
	f         *fabric
	dir       string
	bin       string
	cfgFile   string
	exporters map[string]*process // by host name
	prom, am  *process
	c         *http.Client // dials from the management namespace
	hook      *webhook
	mon       *alertMonitor
	// fleetRules is false while deploy/prometheus/rules.yml has no fleet
	// alerts: the harness then only logs what it sees.
	fleetRules bool
}

// procs returns every process the harness runs, for waitFor.
func (fl *fleet) procs() []*process {
	ps := []*process{fl.prom, fl.am}
	for _, p := range fl.exporters {
		ps = append(ps, p)
	}
	return ps
}

// startExporter starts host h's exporter: web server on the management
// address, reflector on the fabric address.
func (fl *fleet) startExporter(t *testing.T, h *fabricHost) *process {
	t.Helper()
	p := startProcess(t, "llama_exporter on "+h.name, "ip", "netns", "exec", h.ns.Name, fl.bin,
		"--log.level=info", "--config.file="+fl.cfgFile,
		"--web.listen-address="+h.mgmt+":"+exporterPort,
		"--reflector.listen-address="+h.fabric+":"+fmt.Sprint(reflectorPort))
	fl.exporters[h.name] = p
	return p
}

// writeFile writes data to name in the harness's directory and returns
// the path.
func (fl *fleet) writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(fl.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileSD writes the hosts file, with the routers as devices, and runs
// llama-filesd on it, which writes the pairs' targets
// (targets/llama_<source>.json), the exporters' and the devices rules
// (llama_device_info), whose path it returns.
func (fl *fleet) fileSD(t *testing.T) string {
	t.Helper()
	type host struct {
		Name     string            `yaml:"name"`
		Address  string            `yaml:"address"`
		Exporter string            `yaml:"exporter"`
		Labels   map[string]string `yaml:"labels"`
	}
	type device struct {
		Name       string            `yaml:"name"`
		Interfaces map[string]string `yaml:"interfaces"`
	}
	var list struct {
		Hosts   []host   `yaml:"hosts"`
		Devices []device `yaml:"devices"`
	}
	for _, h := range fl.f.hosts {
		list.Hosts = append(list.Hosts, host{h.name, h.fabric, h.mgmt + ":" + exporterPort,
			map[string]string{"leaf": fmt.Sprintf("leaf%d", h.leaf)}})
	}
	for _, r := range append(append([]*fabricRouter(nil), fl.f.spines...), fl.f.leaves...) {
		list.Devices = append(list.Devices, device{r.name, fl.f.interfaces[r.name]})
	}
	data, err := yaml.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	hostsFile := fl.writeFile(t, "hosts.yml", data)
	if err := os.MkdirAll(filepath.Join(fl.dir, "targets"), 0o755); err != nil {
		t.Fatal(err)
	}
	devices := filepath.Join(fl.dir, "devices.rules.yml")
	out, err := exec.Command(goTool(t, "cmd/llama-filesd"), "--hosts.file="+hostsFile,
		"--output.dir="+filepath.Join(fl.dir, "targets"),
		"--output.exporters-file="+filepath.Join(fl.dir, "exporters.json"),
		"--output.devices-rules="+devices,
		"--module=fabric").CombinedOutput()
	if err != nil {
		t.Fatalf("llama-filesd: %v\n%s", err, out)
	}
	t.Logf("llama-filesd: %s", strings.TrimSpace(lastLine(string(out))))
	return devices
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// shippedRules are the rule files the fabric's Prometheus loads: the
// per-pair rules, and the fleet rules once they exist.
var shippedRules = []string{"../deploy/prometheus/rules.yml", "../deploy/prometheus/fleet-rules.yml"}

// rulesOverride writes each shipped rule file with every `for:` (only)
// shortened (see fabricFleetFor), checks the copies with promtool and
// returns their paths. It reports whether they define the
// fleet alerts.
func (fl *fleet) rulesOverride(t *testing.T) ([]string, bool) {
	t.Helper()
	docs := map[string]*ruleDoc{}
	for i, shipped := range shippedRules {
		raw, err := os.ReadFile(shipped)
		if os.IsNotExist(err) && i > 0 {
			t.Logf("%s does not exist", shipped)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var doc ruleDoc
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", shipped, err)
		}
		docs[shipped] = &doc
	}
	shorten, how, fleet := forShortening(t, docs)
	var paths []string
	for i, shipped := range shippedRules {
		doc := docs[shipped]
		if doc == nil {
			continue
		}
		changed := doc.rewriteFor(t, shipped, shorten)
		out, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		path := fl.writeFile(t, fmt.Sprintf("rules-%d.yml", i), out)
		if msg, err := exec.Command(requireTool(t, "promtool"), "check", "rules", path).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules on the shortened copy of %s: %v\n%s", shipped, err, msg)
		}
		t.Logf("rules: %s, for %s: %s", shipped, how, strings.Join(changed, ", "))
		paths = append(paths, path)
	}
	return paths, fleet
}

// ruleDoc is a Prometheus rule file, decoded loosely so that it is
// written back whole.
type ruleDoc struct {
	Groups []map[string]any `yaml:"groups"`
}

// alertRules calls f with every alerting rule of the file.
func (d *ruleDoc) alertRules(t *testing.T, shipped string, f func(name string, rule map[string]any)) {
	t.Helper()
	for _, g := range d.Groups {
		rules, _ := g["rules"].([]any)
		for _, r := range rules {
			rule, ok := r.(map[string]any)
			if !ok {
				t.Fatalf("%s: group %v: a rule is %T", shipped, g["name"], r)
			}
			if name, ok := rule["alert"].(string); ok {
				f(name, rule)
			}
		}
	}
}

// ruleFor returns the rule's key (for, keep_firing_for) as a duration.
func ruleFor(t *testing.T, shipped, name string, rule map[string]any, key string) (time.Duration, bool) {
	t.Helper()
	s, ok := rule[key].(string)
	if !ok {
		return 0, false
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: alert %s: %s %q: %v", shipped, name, key, s, err)
	}
	return time.Duration(d), true
}

// forShortening returns how to shorten a `for:`, a description of it, and
// whether the files define both fleet alerts.
func forShortening(t *testing.T, docs map[string]*ruleDoc) (func(time.Duration) time.Duration, string, bool) {
	t.Helper()
	if s := os.Getenv("LLAMA_FABRIC_FOR_SCALE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LLAMA_FABRIC_FOR_SCALE=%q: want a positive integer", s)
		}
		return func(d time.Duration) time.Duration { return (d / time.Duration(n)).Round(time.Second) }, "/" + s, fleetDefined(t, docs)
	}
	// The fleet alerts' shortest `for:` becomes fabricFleetFor.
	shift := time.Duration(-1)
	for shipped, doc := range docs {
		doc.alertRules(t, shipped, func(name string, rule map[string]any) {
			if d, ok := ruleFor(t, shipped, name, rule, "for"); ok && (name == alertLink || name == alertHost) && (shift < 0 || d-fabricFleetFor < shift) {
				shift = max(d-fabricFleetFor, 0)
			}
		})
	}
	shift = max(shift, 0)
	return func(d time.Duration) time.Duration { return max(d-shift, 0) }, "-" + model.Duration(shift).String(), fleetDefined(t, docs)
}

// fleetDefined reports whether the rule files define both fleet alerts.
func fleetDefined(t *testing.T, docs map[string]*ruleDoc) bool {
	t.Helper()
	seen := map[string]bool{}
	for shipped, doc := range docs {
		doc.alertRules(t, shipped, func(name string, _ map[string]any) { seen[name] = true })
	}
	return seen[alertLink] && seen[alertHost]
}

// rewriteFor shortens every for of the file with shorten, and returns
// what it changed.
func (d *ruleDoc) rewriteFor(t *testing.T, shipped string, shorten func(time.Duration) time.Duration) []string {
	t.Helper()
	var changed []string
	d.alertRules(t, shipped, func(name string, rule map[string]any) {
		// keep_firing_for is left as it is: it covers how long the data
		// (windows, traces) hold a fault after it ends, which the test does
		// not shorten.
		for _, key := range []string{"for"} {
			if v, ok := ruleFor(t, shipped, name, rule, key); ok {
				rule[key] = model.Duration(shorten(v)).String()
				changed = append(changed, fmt.Sprintf("%s %s %s->%s", name, key, model.Duration(v), rule[key]))
			}
		}
	})
	return changed
}

// shippedFileSD is the Prometheus configuration the fabric and host-drop
// tests rewrite for their labs.
const shippedFileSD = "../deploy/file_sd/prometheus.yml"

// shippedFileSDConfig returns deploy/file_sd/prometheus.yml, decoded.
func shippedFileSDConfig(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(shippedFileSD)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", shippedFileSD, err)
	}
	return cfg
}

// prometheusFabricConfig rewrites deploy/file_sd/prometheus.yml for the
// fabric: 5 s scrapes and evaluations, the generated files, the rule files
// and the test's Alertmanager.
func (fl *fleet) prometheusFabricConfig(t *testing.T, rules []string) string {
	t.Helper()
	cfg := shippedFileSDConfig(t)
	iv := model.Duration(fabricScrapeInterval).String()
	cfg["global"] = map[string]any{"scrape_interval": iv, "evaluation_interval": iv, "scrape_timeout": "4s"}
	cfg["rule_files"] = stringsToAny(rules)
	cfg["alerting"] = map[string]any{"alertmanagers": []any{
		map[string]any{"static_configs": []any{map[string]any{"targets": []any{amListen}}}}}}
	jobs, _ := cfg["scrape_configs"].([]any)
	found := 0
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		switch job["job_name"] {
		case "llama":
			job["params"] = map[string]any{"module": []any{"fabric"}}
			job["file_sd_configs"] = []any{map[string]any{"files": []any{filepath.Join(fl.dir, "targets", "*.json")}, "refresh_interval": "5s"}}
			found++
		case "llama_exporter":
			job["file_sd_configs"] = []any{map[string]any{"files": []any{filepath.Join(fl.dir, "exporters.json")}, "refresh_interval": "5s"}}
			found++
		}
	}
	if found != 2 {
		t.Fatalf("%s: want jobs llama and llama_exporter with file_sd_configs", shippedFileSD)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := fl.writeFile(t, "prometheus.yml", out)
	if msg, err := exec.Command(requireTool(t, "promtool"), "check", "config", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s\n--- config ---\n%s", err, msg, out)
	}
	return path
}

// alertmanagerConfig returns the test's Alertmanager configuration:
// deploy/alertmanager/alertmanager.yml with every receiver that notifies
// anyone replaced by the webhook at url, and short waits. While that file
// does not exist, a minimal one: every alert to the webhook, a fleet alert
// inhibiting every per-pair alert.
func alertmanagerConfig(t *testing.T, url string) []byte {
	t.Helper()
	const shipped = "../deploy/alertmanager/alertmanager.yml"
	hook := []any{map[string]any{"url": url, "send_resolved": true}}
	var cfg map[string]any
	if raw, err := os.ReadFile(shipped); err == nil {
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("%s: %v", shipped, err)
		}
		receivers, _ := cfg["receivers"].([]any)
		for _, r := range receivers {
			rc, _ := r.(map[string]any)
			notifies := false
			for key := range rc {
				if strings.HasSuffix(key, "_configs") {
					delete(rc, key)
					notifies = true
				}
			}
			if notifies {
				rc["webhook_configs"] = hook
			}
		}
	} else {
		t.Logf("%s: %v; using a minimal inhibit rule (a fleet alert silences every per-pair alert)", shipped, err)
		cfg = map[string]any{
			"route":     map[string]any{"receiver": "fabric-test"},
			"receivers": []any{map[string]any{"name": "fabric-test", "webhook_configs": hook}},
			"inhibit_rules": []any{map[string]any{
				"source_matchers": []any{fmt.Sprintf("alertname=~%q", alertLink+"|"+alertHost)},
				"target_matchers": []any{fmt.Sprintf("alertname=~%q", strings.Join(perPairAlerts, "|"))},
			}},
		}
	}
	route, ok := cfg["route"].(map[string]any)
	if !ok {
		t.Fatalf("%s: no route", shipped)
	}
	route["group_wait"], route["group_interval"], route["repeat_interval"] = "1s", "2s", "1h"
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// webhook is the Alertmanager receiver: it records every alert delivered.
type webhook struct {
	mu     sync.Mutex
	alerts []deliveredAlert
}

// deliveredAlert is one alert of one webhook notification.
type deliveredAlert struct {
	At          time.Time
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Fingerprint string            `json:"fingerprint"`
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var msg struct {
		Alerts []deliveredAlert `json:"alerts"`
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &msg)
	}
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	w.mu.Lock()
	for _, a := range msg.Alerts {
		a.At = now
		w.alerts = append(w.alerts, a)
	}
	w.mu.Unlock()
}

// delivered returns the alerts delivered so far.
func (w *webhook) delivered() []deliveredAlert {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]deliveredAlert(nil), w.alerts...)
}

// serveWebhook serves w on the management network and returns its URL.
func serveWebhook(t *testing.T, f *fabric, w *webhook) string {
	t.Helper()
	l, err := f.mgmt.Listen("tcp", mgmtAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: w, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().(*net.TCPAddr).String() + "/"
}

// promAlert is one alert of Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	// Value is the alert expression's value: for the fleet alerts, the
	// number of pairs explained.
	Value string `json:"value"`
}

// identity is what a fleet alert names: the link's far end or the host.
func (a promAlert) identity() string {
	switch a.Labels["alertname"] {
	case alertLink:
		return alertLink + " to=" + a.Labels["to"]
	case alertHost:
		return alertHost + " host=" + a.Labels["host"]
	}
	return a.Labels["alertname"]
}

// seenAlert is a fleet alert the monitor saw firing.
type seenAlert struct {
	alert       promAlert
	first, last time.Time
}

// alertMonitor polls Prometheus's alerts and Alertmanager's inhibitions
// every few seconds in the background.
type alertMonitor struct {
	c    *http.Client
	stop chan struct{}
	done chan struct{}

	mu sync.Mutex
	// firing holds each fleet alert firing now or lately, by identity;
	// ended holds the episodes that ended (unseen for episodeGap).
	firing map[string]*seenAlert
	ended  []seenAlert
	// current is the last poll's fleet alerts, pending and firing.
	current []promAlert
	// inhibited holds the fingerprints of alerts Alertmanager showed as
	// inhibited, with what inhibited them.
	inhibited map[string][]string
	errs      int
	lastErr   error
}

const monitorEvery = 3 * time.Second

func startAlertMonitor(t *testing.T, c *http.Client) *alertMonitor {
	m := &alertMonitor{c: c, stop: make(chan struct{}), done: make(chan struct{}),
		firing: map[string]*seenAlert{}, inhibited: map[string][]string{}}
	go func() {
		defer close(m.done)
		for {
			m.poll()
			select {
			case <-m.stop:
				return
			case <-time.After(monitorEvery):
			}
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *alertMonitor) close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

func (m *alertMonitor) poll() {
	alerts, err := promAlerts(m.c)
	if err == nil {
		err = m.pollInhibitions()
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		m.lastErr = err
		return
	}
	m.current = m.current[:0]
	for _, a := range alerts {
		name := a.Labels["alertname"]
		if name != alertLink && name != alertHost {
			continue
		}
		m.current = append(m.current, a)
		if a.State != "firing" {
			continue
		}
		id := a.identity()
		if s, ok := m.firing[id]; ok && now.Sub(s.last) <= episodeGap {
			s.last, s.alert = now, a
		} else {
			if ok {
				m.ended = append(m.ended, *s)
			}
			m.firing[id] = &seenAlert{alert: a, first: now, last: now}
		}
	}
}

// pollInhibitions records the alerts Alertmanager holds as inhibited.
func (m *alertMonitor) pollInhibitions() error {
	body, err := get(m.c, "http://"+amListen+"/api/v2/alerts")
	if err != nil {
		return err
	}
	var alerts []struct {
		Fingerprint string `json:"fingerprint"`
		Status      struct {
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &alerts); err != nil {
		return fmt.Errorf("alertmanager alerts: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range alerts {
		if len(a.Status.InhibitedBy) > 0 {
			m.inhibited[a.Fingerprint] = a.Status.InhibitedBy
		}
	}
	return nil
}

// snapshot returns the fleet alerts seen firing (by identity) and the last
// poll's.
func (m *alertMonitor) snapshot() (map[string]seenAlert, []promAlert) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]seenAlert, len(m.firing))
	for id, s := range m.firing {
		out[id] = *s
	}
	return out, append([]promAlert(nil), m.current...)
}

// episodes returns every episode of a fleet alert firing: those that
// ended, and the latest of each identity.
func (m *alertMonitor) episodes() []seenAlert {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]seenAlert(nil), m.ended...)
	for _, s := range m.firing {
		out = append(out, *s)
	}
	return out
}

// errors returns the number of failed polls and the last error.
func (m *alertMonitor) errors() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.errs, m.lastErr
}

// wasInhibited reports whether Alertmanager ever showed the alert with this
// fingerprint as inhibited.
func (m *alertMonitor) wasInhibited(fp string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.inhibited[fp]) > 0
}

// promAlerts returns the fabric's Prometheus's active alerts, pending and
// firing.
func promAlerts(c *http.Client) ([]promAlert, error) { return promAlertsAt(c, promListen) }

// promAlertsAt returns the active alerts, pending and firing, of the
// Prometheus at addr (host:port).
func promAlertsAt(c *http.Client, addr string) ([]promAlert, error) {
	body, err := get(c, "http://"+addr+"/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || resp.Status != "success" {
		return nil, fmt.Errorf("prometheus alerts: status %q, %v: %.200s", resp.Status, err, body)
	}
	return resp.Data.Alerts, nil
}

// describeAlerts formats alerts one a line, sorted.
func describeAlerts(as []promAlert) string {
	var lines []string
	for _, a := range as {
		lines = append(lines, fmt.Sprintf("  %s %s %v %v", a.State, a.identity(), a.Labels, a.Annotations))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
