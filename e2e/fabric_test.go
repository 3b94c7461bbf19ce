//go:build linux

package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// Time limits of the fleet rules on the simulated fabric.
const (
	faultDuration = 60 * time.Second // each fault is on this long
	nameWithin    = 2 * time.Minute  // the culprit is named this soon after the fault starts
	clearWithin   = 2 * time.Minute  // and cleared this soon after it ends
	quietTimeout  = 3 * time.Minute  // the fabric settles this soon after a fault
	faultViewAt   = 45 * time.Second // when the per-pair view of a fault is logged
	episodeGap    = 4 * monitorEvery // a fleet alert unseen this long has ended
	cpuSample     = 20 * time.Second // the exporters' CPU is measured over this
	warmUpSlack   = 90 * time.Second // beyond one trace a second of every flow
	faultPoll     = 1 * time.Second  // how often a fault's progress is checked
	clockTicks    = 100.0            // USER_HZ, the unit of /proc/PID/stat times
	pageMiB       = 1024.0 * 1024.0  // bytes per MiB
	defaultHosts  = 12               // LLAMA_FABRIC_HOSTS unset
	fabricLeaves  = 4                // hosts are spread over this many leaves
	fabricSpines  = 2                // each leaf links to every spine
	mgmtReadyWait = 30 * time.Second // Prometheus and Alertmanager start
	healthyWindow = 35 * time.Second // a full 30 s window and a scrape
)

// TestFabric runs one exporter on each host of a simulated leaf-spine
// fabric (fabric_lab_test.go), all probing each other (full mesh, 8 ECMP
// flows a pair, path tracing), scraped by a real Prometheus through
// llama-filesd's file_sd with the shipped rules, and alerting a real
// Alertmanager with the shipped inhibit rules. It measures the healthy
// fleet, then makes five faults one at a time, 60 s each:
//
//	(a) black hole on the link spine1 -> leaf2
//	(b) 10 % random drop on the link spine2 -> leaf3
//	(c) the exporter (and reflector) of leaf4-h1 killed
//	(d) 10 % random drop on the link leaf1 -> leaf1-h2
//	(e) black hole on the link leaf3 -> spine1 (the way up: replies of
//	    pairs towards leaf3's hosts die there, and forward probes of pairs
//	    from them)
//
// For each, LlamaLinkLoss (label to: the address of the interface that
// receives on the link) or LlamaHostUnreachable (label host) must fire
// within 2 minutes of the fault's start and clear within 2 minutes of its
// end, no other link or host may be named at any time, and no per-pair
// alert that Alertmanager shows as inhibited may reach the receiver. Until
// deploy/prometheus/rules.yml defines the fleet alerts, the test only logs.
//
// It takes about 13 minutes and skips with -short. LLAMA_FABRIC_HOSTS sets
// the number of hosts (a multiple of 4; 24 for the README's scale figures)
// and LLAMA_FABRIC_FAULTS the faults to make ("a,c"; "none" for the healthy
// measurement alone).
func TestFabric(t *testing.T) {
	if testing.Short() {
		t.Skip("the fabric test takes about 13 minutes; run it without -short (make fabric)")
	}
	netns.Require(t)
	for _, tool := range []string{"prometheus", "promtool", "amtool", "iptables", "ping"} {
		requireTool(t, tool)
	}
	hosts := fabricHostCount(t)
	faults := selectFaults(t)
	f := newFabric(t, fabricSpines, fabricLeaves, hosts/fabricLeaves)
	fl := startFleet(t, f)
	fl.warmUp(t)
	fl.measureHealthy(t)
	var results []faultResult
	for _, fc := range faults {
		results = append(results, fl.runFault(t, fc))
	}
	fl.report(t, results)
}

// fabricHostCount reads LLAMA_FABRIC_HOSTS.
func fabricHostCount(t *testing.T) int {
	t.Helper()
	s := os.Getenv("LLAMA_FABRIC_HOSTS")
	if s == "" {
		return defaultHosts
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 2*fabricLeaves || n%fabricLeaves != 0 {
		t.Fatalf("LLAMA_FABRIC_HOSTS=%q: want a multiple of %d, at least %d", s, fabricLeaves, 2*fabricLeaves)
	}
	return n
}

// fabricFault is one fault: a link fault, or a host's exporter killed.
type fabricFault struct {
	id, desc string
	link     string  // key of fabric.links, or "" for a killed exporter
	p        float64 // drop probability of a link fault
	host     string  // the host whose exporter is killed
}

var fabricFaults = []fabricFault{
	{id: "a", desc: "black hole on spine1 -> leaf2", link: "spine1>leaf2", p: 1},
	{id: "b", desc: "10 % drop on spine2 -> leaf3", link: "spine2>leaf3", p: 0.1},
	{id: "c", desc: "exporter of leaf4-h1 killed", host: "leaf4-h1"},
	{id: "d", desc: "10 % drop on leaf1 -> leaf1-h2", link: "leaf1>leaf1-h2", p: 0.1},
	{id: "e", desc: "black hole on leaf3 -> spine1 (upwards)", link: "leaf3>spine1", p: 1},
}

// selectFaults reads LLAMA_FABRIC_FAULTS.
func selectFaults(t *testing.T) []fabricFault {
	t.Helper()
	s := os.Getenv("LLAMA_FABRIC_FAULTS")
	if s == "" {
		return fabricFaults
	}
	var out []fabricFault
	for _, id := range strings.Split(s, ",") {
		if id == "none" {
			continue
		}
		found := false
		for _, fc := range fabricFaults {
			if fc.id == strings.TrimSpace(id) {
				out, found = append(out, fc), true
			}
		}
		if !found {
			t.Fatalf("LLAMA_FABRIC_FAULTS=%q: no fault %q (a to e, or none)", s, id)
		}
	}
	return out
}

// alertmanagerBinary finds Debian's prometheus-alertmanager or upstream's
// alertmanager.
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testlab.SkipOrFail(t, "neither prometheus-alertmanager nor alertmanager is on PATH")
	return ""
}

// startFleet starts the exporters, writes the discovery files, and starts
// Alertmanager, the webhook receiver, Prometheus and the alert monitor.
func startFleet(t *testing.T, f *fabric) *fleet {
	t.Helper()
	fl := &fleet{f: f, dir: t.TempDir(), bin: exporterBinary(t), exporters: map[string]*process{},
		c: newHTTPClient(f.mgmt.DialContext()), hook: &webhook{}}
	fl.cfgFile = fl.writeFile(t, "llama.yml", []byte(fabricModule))
	for _, h := range f.hosts {
		fl.startExporter(t, h)
	}
	for _, h := range f.hosts {
		waitHealthy(t, fl.c, h.mgmt+":"+exporterPort, fl.exporters[h.name])
	}
	devices := fl.fileSD(t)
	rules, ok := fl.rulesOverride(t)
	rules = append(rules, devices)
	fl.fleetRules = ok
	if !ok {
		t.Logf("the rule files %v define no %s and %s: the fleet assertions are not checked, only logged", shippedRules, alertLink, alertHost)
	}

	amCfg := fl.writeFile(t, "alertmanager.yml", alertmanagerConfig(t, serveWebhook(t, f, fl.hook)))
	if msg, err := exec.Command(requireTool(t, "amtool"), "check-config", amCfg).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, msg)
	}
	fl.am = startProcess(t, "alertmanager", "ip", "netns", "exec", f.mgmt.Name, alertmanagerBinary(t),
		"--config.file="+amCfg, "--storage.path="+fl.dir+"/am", "--web.listen-address="+amListen,
		"--cluster.listen-address=", "--log.level=warn")
	fl.prom = startProcess(t, "prometheus", "ip", "netns", "exec", f.mgmt.Name, requireTool(t, "prometheus"),
		"--config.file="+fl.prometheusFabricConfig(t, rules), "--storage.tsdb.path="+fl.dir+"/prom",
		"--web.listen-address="+promListen, "--log.level=warn")
	for _, api := range []string{promListen + "/-/ready", amListen + "/-/ready"} {
		waitFor(t, mgmtReadyWait, api, fl.procs(), func() error {
			_, err := get(fl.c, "http://"+api)
			return err
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTargets(t, fl.c, "http://"+promListen)
		}
	})
	fl.mon = startAlertMonitor(t, fl.c)
	return fl
}

// query runs an instant query on the fleet's Prometheus.
func (fl *fleet) query(q string) ([]promSample, error) {
	return promQuery(fl.c, "http://"+promListen, q)
}

// pairs is the number of probed pairs.
func (fl *fleet) pairs() int { n := len(fl.f.hosts); return n * (n - 1) }

// warmUp waits until every flow of every pair has been traced, and checks
// the traced paths against the ECMP plan.
func (fl *fleet) warmUp(t *testing.T) {
	t.Helper()
	start := time.Now()
	want := fl.pairs() * fabricFlows
	perExporter := (len(fl.f.hosts) - 1) * fabricFlows
	timeout := time.Duration(perExporter)*time.Second*13/10 + warmUpSlack
	waitFor(t, timeout, "every flow traced", fl.procs(), func() error {
		s, err := fl.query(`count(llama_probe_flow_path_hops{job="llama"})`)
		if err != nil {
			return err
		}
		if len(s) != 1 || int(s[0].Value) < want {
			return fmt.Errorf("%v flows traced of %d", s, want)
		}
		return nil
	})
	t.Logf("warm-up: all %d flows traced after %v", want, time.Since(start).Round(time.Second))
	fl.checkPaths(t)
}

// checkPaths compares every flow's traced hops with the plan: its leaf,
// the spine that fabricSpine picks (answering from its link to the source's
// leaf), the destination's leaf (answering from its link to that spine). A
// hop that has not answered yet is counted, not failed.
func (fl *fleet) checkPaths(t *testing.T) {
	t.Helper()
	s, err := fl.query(`llama_probe_path_hop_info{job="llama",hop=~"1|2|3"}`)
	if err != nil {
		t.Fatal(err)
	}
	byName := fl.hostsByName()
	bad, silent, checked := 0, 0, 0
	for _, x := range s {
		src, dst := byName[x.Metric["source"]], byName[x.Metric["destination"]]
		port, err := strconv.Atoi(x.Metric["flow"])
		if src == nil || dst == nil || err != nil {
			t.Errorf("hop series with unknown pair or flow: %v", x.Metric)
			continue
		}
		want := ""
		sp := fabricSpine(fabricSpines, src.leaf, port-fabricFirstPort, false)
		switch x.Metric["hop"] {
		case "1":
			want = src.leafAddr
		case "2":
			if src.leaf == dst.leaf {
				continue // the target itself
			}
			want = spineAddr(sp, src.leaf)
		case "3":
			want = leafUplinkAddr(sp, dst.leaf)
		}
		checked++
		if x.Metric["address"] == "*" {
			// A hop may stay silent (ICMP rate limits): skipped, as the
			// exporter skips it, never blamed.
			silent++
			continue
		}
		if x.Metric["address"] != want {
			bad++
			if bad <= 10 {
				t.Errorf("%s -> %s flow %d hop %s answered from %s, want %s (%s)", src.name, dst.name, port,
					x.Metric["hop"], x.Metric["address"], want, fl.f.devices[want])
			}
		}
	}
	t.Logf("traced paths: %d hops checked against the ECMP plan, %d silent (never answered yet), %d differ", checked, silent, bad)
}

func (fl *fleet) hostsByName() map[string]*fabricHost {
	m := map[string]*fabricHost{}
	for _, h := range fl.f.hosts {
		m[h.name] = h
	}
	return m
}

// measureHealthy logs the healthy fleet's figures: the loss matrix (which
// must be 0 everywhere), RTT, the exporters' CPU and RSS, Prometheus's
// series and scrape durations.
func (fl *fleet) measureHealthy(t *testing.T) {
	t.Helper()
	matrix, err := fl.query(`llama_probe_window_loss_ratio{job="llama"}`)
	if err != nil {
		t.Fatal(err)
	}
	fl.logMatrix(t, matrix)
	if len(matrix) != fl.pairs() {
		t.Errorf("loss matrix has %d pairs, want %d", len(matrix), fl.pairs())
	}
	for _, x := range matrix {
		if x.Value != 0 {
			t.Errorf("healthy fabric: %s -> %s loss ratio %v", x.Metric["source"], x.Metric["destination"], x.Value)
		}
	}
	cpu, rss := fl.exporterUsage(t)
	figures := []string{
		fmt.Sprintf("%d hosts, %d pairs, %d flows", len(fl.f.hosts), fl.pairs(), fl.pairs()*fabricFlows),
		fmt.Sprintf("exporter CPU mean %.1f %% max %.1f %% of a core", mean(cpu), maxOf(cpu)),
		fmt.Sprintf("exporter RSS mean %.0f MiB max %.0f MiB", mean(rss), maxOf(rss)),
	}
	for _, q := range []struct{ what, expr, unit string }{
		{"p50 RTT (median pair)", `quantile(0.5, llama_probe_window_rtt_seconds{job="llama",quantile="0.5"}) * 1e6`, "µs"},
		{"scrape duration p99 (job llama)", `quantile(0.99, quantile_over_time(0.99, scrape_duration_seconds{job="llama"}[1m])) * 1e3`, "ms"},
		{"scrape duration p99 (job llama_exporter)", `quantile(0.99, quantile_over_time(0.99, scrape_duration_seconds{job="llama_exporter"}[1m])) * 1e3`, "ms"},
		{"samples per scrape (job llama, sum)", `sum(scrape_samples_scraped{job="llama"})`, ""},
	} {
		s, err := fl.query(q.expr)
		if err != nil || len(s) != 1 {
			figures = append(figures, fmt.Sprintf("%s: %v %v", q.what, s, err))
			continue
		}
		figures = append(figures, fmt.Sprintf("%s %.1f %s", q.what, s[0].Value, q.unit))
	}
	if body, err := get(fl.c, "http://"+promListen+"/metrics"); err == nil {
		if m, err := parseExposition(body); err == nil {
			if v, err := single(m, "prometheus_tsdb_head_series"); err == nil {
				figures = append(figures, fmt.Sprintf("Prometheus head series %.0f", v))
			}
		}
	}
	t.Logf("healthy fleet:\n  %s", strings.Join(figures, "\n  "))
}

// logMatrix logs a source x destination matrix of loss ratios.
func (fl *fleet) logMatrix(t *testing.T, s []promSample) {
	t.Helper()
	v := map[[2]string]float64{}
	for _, x := range s {
		v[[2]string{x.Metric["source"], x.Metric["destination"]}] = x.Value
	}
	var b strings.Builder
	b.WriteString("loss matrix (rows: source, columns: destination; . = 0, - = self, ? = missing):\n")
	for _, src := range fl.f.hosts {
		fmt.Fprintf(&b, "  %-10s", src.name)
		for _, dst := range fl.f.hosts {
			x, ok := v[[2]string{src.name, dst.name}]
			switch {
			case src == dst:
				b.WriteString("    -")
			case !ok:
				b.WriteString("    ?")
			case x == 0:
				b.WriteString("    .")
			default:
				fmt.Fprintf(&b, " %4.2f", x)
			}
		}
		b.WriteString("\n")
	}
	t.Log(b.String())
}

// exporterUsage returns each exporter's CPU (% of a core over cpuSample)
// and RSS (MiB).
func (fl *fleet) exporterUsage(t *testing.T) (cpu, rss []float64) {
	t.Helper()
	before := map[string]float64{}
	for name, p := range fl.exporters {
		before[name] = cpuTicks(t, p.cmd.Process.Pid)
	}
	time.Sleep(cpuSample)
	for name, p := range fl.exporters {
		cpu = append(cpu, (cpuTicks(t, p.cmd.Process.Pid)-before[name])/clockTicks/cpuSample.Seconds()*100)
		rss = append(rss, rssBytes(t, p.cmd.Process.Pid)/pageMiB)
	}
	return cpu, rss
}

// cpuTicks returns utime + stime of a process, in clock ticks.
func cpuTicks(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return utime + stime
}

// rssBytes returns VmRSS of a process.
func rssBytes(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

// faultResult is what one fault showed.
type faultResult struct {
	fault        fabricFault
	start, quiet time.Time         // the fault's start; the fabric quiet after it
	expect       string            // the identity of the alert that names it
	named        time.Duration     // from the fault's start; 0: never
	cleared      time.Duration     // from the fault's end; 0: never seen cleared
	pairs        string            // the pairs the alert explains: its value
	labels       map[string]string // the alert's labels when first seen firing
	falseBlames  []string
	covered      []string // per-pair alerts delivered though inhibited, or of a pair the fault explains
	uncovered    []string // per-pair alerts of other pairs delivered, never inhibited
}

// expectedIdentity returns the identity (promAlert.identity) of the
// alert that must name the fault.
func (fl *fleet) expectedIdentity(t *testing.T, fc fabricFault) string {
	t.Helper()
	if fc.host != "" {
		return alertHost + " host=" + fc.host
	}
	l := fl.f.links[fc.link]
	if l == nil {
		t.Fatalf("fault %s: no link %s", fc.id, fc.link)
	}
	return alertLink + " to=" + l.toAddr
}

// setFault turns the fault on or off.
func (fl *fleet) setFault(t *testing.T, fc fabricFault, on bool) {
	t.Helper()
	if fc.link != "" {
		(&linkFault{link: fl.f.links[fc.link], p: fc.p}).set(t, on)
		return
	}
	h := fl.f.host(t, fc.host)
	if on {
		p := fl.exporters[h.name]
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("killing %s: %v", p.name, err)
		}
		<-p.done
		return
	}
	waitHealthy(t, fl.c, h.mgmt+":"+exporterPort, fl.startExporter(t, h))
}

// runFault makes one fault for faultDuration and follows it until the
// fabric is quiet again.
func (fl *fleet) runFault(t *testing.T, fc fabricFault) faultResult {
	t.Helper()
	fl.waitQuiet(t, "before fault "+fc.id)
	r := faultResult{fault: fc, expect: fl.expectedIdentity(t, fc)}
	if fc.link != "" {
		t.Logf("fault %s: %s: %v, device %s; expect %s", fc.id, fc.desc, fl.f.links[fc.link], fl.f.devices[fl.f.links[fc.link].toAddr], r.expect)
	} else {
		t.Logf("fault %s: %s; expect %s", fc.id, fc.desc, r.expect)
	}
	start := time.Now()
	fl.setFault(t, fc, true)
	viewed := false
	var end time.Time
	for {
		now := time.Now()
		seen, current := fl.mon.snapshot()
		if s, ok := seen[r.expect]; ok && r.named == 0 && s.last.After(start) {
			r.named = s.first.Sub(start)
			r.pairs, r.labels = s.alert.Value, s.alert.Labels
			if v, err := strconv.ParseFloat(s.alert.Value, 64); err == nil {
				r.pairs = fmt.Sprint(v)
			}
			t.Logf("fault %s: named after %v: %v %v", fc.id, r.named.Round(time.Second), s.alert.Labels, s.alert.Annotations)
		}
		if !viewed && now.Sub(start) >= faultViewAt {
			fl.logFaultView(t, fc)
			viewed = true
		}
		if end.IsZero() && now.Sub(start) >= faultDuration {
			fl.setFault(t, fc, false)
			end = time.Now()
			t.Logf("fault %s: removed; fleet alerts now:\n%s", fc.id, describeAlerts(current))
		}
		if !end.IsZero() {
			firing := false
			for _, a := range current {
				firing = firing || a.State == "firing" && a.identity() == r.expect
			}
			if !firing && (r.named != 0 || !fl.fleetRules || now.Sub(start) > nameWithin) {
				if r.named != 0 {
					r.cleared = now.Sub(end)
				}
				break
			}
			if now.Sub(end) > clearWithin+quietTimeout {
				break
			}
		}
		time.Sleep(faultPoll)
	}
	fl.waitQuiet(t, "after fault "+fc.id)
	r.start, r.quiet = start, time.Now()
	fl.judge(t, &r)
	return r
}

// waitQuiet waits until every exporter is scraped, no pair loses probes,
// and no fleet or per-pair alert is pending or firing.
func (fl *fleet) waitQuiet(t *testing.T, when string) {
	t.Helper()
	alerts := strings.Join(append([]string{alertLink, alertHost}, perPairAlerts...), "|")
	checks := []struct{ expr, want string }{
		{`count(up{job=~"llama|llama_exporter"} == 1)`, fmt.Sprint(fl.pairs() + len(fl.f.hosts))},
		{`count(llama_probe_window_packets_lost{job="llama"} == 0)`, fmt.Sprint(fl.pairs())},
		{`count(ALERTS{alertname=~"` + alerts + `"}) or vector(0)`, "0"},
	}
	start := time.Now()
	waitFor(t, quietTimeout, "a quiet fabric "+when, fl.procs(), func() error {
		for _, c := range checks {
			s, err := fl.query(c.expr)
			if err != nil {
				return err
			}
			if len(s) != 1 || fmt.Sprint(s[0].Value) != c.want {
				return fmt.Errorf("%s = %v, want %s", c.expr, s, c.want)
			}
		}
		return nil
	})
	t.Logf("quiet %s after %v", when, time.Since(start).Round(time.Second))
}

// judge checks a fault's outcome: named and cleared in time, no other link
// or host named since the fault began, no per-pair alert delivered that
// was inhibited or whose pair the fault explains (its flows cross the
// faulty link either way, or it goes to or from the faulty host): those
// the fleet alert must silence, until they resolve.
func (fl *fleet) judge(t *testing.T, r *faultResult) {
	t.Helper()
	for _, s := range fl.mon.episodes() {
		if s.alert.identity() != r.expect && !s.last.Before(r.start) {
			r.falseBlames = append(r.falseBlames, fmt.Sprintf("%s %v %v", s.alert.identity(), s.alert.Labels, s.alert.Annotations))
		}
	}
	affected := fl.f.affectedPairs(r.fault)
	for _, a := range fl.hook.delivered() {
		if n := a.Labels["alertname"]; !a.At.Before(r.start) && (n == "LlamaLossExplained" || n == "LlamaHostExplained") && fl.fleetRules {
			t.Errorf("fault %s: %s reached the receiver; it only inhibits: %v", r.fault.id, n, a.Labels)
		}
		if a.At.Before(r.start) || a.Status != "firing" || !isPerPair(a.Labels["alertname"]) {
			continue
		}
		desc := fmt.Sprintf("%s %s -> %s", a.Labels["alertname"], a.Labels["source"], a.Labels["destination"])
		if to := a.Labels["to"]; to != "" {
			desc += fmt.Sprintf(" to=%s (%s)", to, fl.f.devices[to])
		}
		if fl.mon.wasInhibited(a.Fingerprint) || affected[[2]string{a.Labels["source"], a.Labels["destination"]}] {
			r.covered = append(r.covered, desc)
		} else {
			r.uncovered = append(r.uncovered, desc)
		}
	}
	sort.Strings(r.falseBlames)
	t.Logf("fault %s (%s): named after %v, cleared %v after its end, pairs explained %q, false blames %d %v, inhibited per-pair alerts delivered %d %v, per-pair alerts delivered not inhibited %d %v",
		r.fault.id, r.fault.desc, r.named.Round(time.Second), r.cleared.Round(time.Second), r.pairs,
		len(r.falseBlames), r.falseBlames, len(r.covered), head(r.covered), len(r.uncovered), head(r.uncovered))
	if !fl.fleetRules {
		return
	}
	if r.named == 0 || r.named > nameWithin {
		t.Errorf("fault %s (%s): %s not named within %v of the start (named after %v)", r.fault.id, r.fault.desc, r.expect, nameWithin, r.named)
	}
	if r.cleared == 0 || r.cleared > clearWithin {
		t.Errorf("fault %s (%s): %s not cleared within %v of the end", r.fault.id, r.fault.desc, r.expect, clearWithin)
	}
	if l := fl.f.links[r.fault.link]; l != nil && r.named != 0 && (r.labels["link"] != l.name() || r.labels["device"] != l.to) {
		t.Errorf("fault %s (%s): %s names link %q, device %q; want %q, %q", r.fault.id, r.fault.desc, r.expect,
			r.labels["link"], r.labels["device"], l.name(), l.to)
	}
	if len(r.falseBlames) > 0 {
		t.Errorf("fault %s (%s): %d false blames: %v", r.fault.id, r.fault.desc, len(r.falseBlames), r.falseBlames)
	}
	if len(r.covered) > 0 {
		t.Errorf("fault %s (%s): per-pair alerts that the fleet alert explains reached the receiver: %v", r.fault.id, r.fault.desc, r.covered)
	}
}

func isPerPair(name string) bool {
	for _, n := range perPairAlerts {
		if n == name {
			return true
		}
	}
	return false
}

// report logs a table of the faults and the alerts seen overall.
func (fl *fleet) report(t *testing.T, results []faultResult) {
	t.Helper()
	var b strings.Builder
	b.WriteString("fault  named after  cleared after end  false blames  inhibited delivered  pairs explained\n")
	for _, r := range results {
		fmt.Fprintf(&b, "%-6s %-12v %-18v %-13d %-20d %s  (%s)\n", r.fault.id, r.named.Round(time.Second),
			r.cleared.Round(time.Second), len(r.falseBlames), len(r.covered), r.pairs, r.fault.desc)
	}
	var ids []string
	for _, s := range fl.mon.episodes() {
		id := s.alert.identity()
		ids = append(ids, fmt.Sprintf("%s (%s .. %s)", id, s.first.Format("15:04:05"), s.last.Format("15:04:05")))
		if !explained(s, results) && fl.fleetRules {
			t.Errorf("false blame outside every fault: %s %v %v, firing %s .. %s", id, s.alert.Labels, s.alert.Annotations,
				s.first.Format("15:04:05"), s.last.Format("15:04:05"))
		}
	}
	sort.Strings(ids)
	errs, lastErr := fl.mon.errors()
	fmt.Fprintf(&b, "fleet alerts seen firing: %v; monitor poll errors: %d (last: %v)", ids, errs, lastErr)
	t.Log(b.String())
}

// explained reports whether a fleet alert's episode began during a fault
// (or while the fabric settled after it), or overlapped one: those are the
// faults' own business (judge).
func explained(s seenAlert, results []faultResult) bool {
	for _, r := range results {
		if !s.last.Before(r.start) && !s.first.After(r.quiet) {
			return true
		}
	}
	return false
}
