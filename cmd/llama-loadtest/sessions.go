//go:build linux

package main

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/gen"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

// sessionsMode is "llama-loadtest sessions": N probe sessions in one
// exporter, its CPU and memory in steady state, /probe latency and loss.
type sessionsMode struct {
	cmd               *kingpin.CmdClause
	ef                exporterFlags
	Sessions          int
	Interval          time.Duration
	ProbeTimeout      time.Duration
	Window            time.Duration
	Flows             int
	Duration          time.Duration
	Warmup            time.Duration
	CreateConcurrency int
	CreateTimeout     time.Duration
	ScrapeRate        float64
	ScrapeConcurrency int
	ScrapeGzip        bool
	Reflector         string
	CPUExporter       string
	CPUReflector      string
	Sweep             bool
	SweepConcurrency  int
	Baseline          bool
	Prober            string
	PeerSmokeping     string
}

// maxSessions bounds --sessions: targets are 127.x.y.z with x from 1 to
// 254 and z from 1 to 254.
const maxSessions = 254 * 256 * 254

func addSessionsCmd(app *kingpin.Application) *sessionsMode {
	m := &sessionsMode{}
	c := app.Command("sessions", "Start N probe sessions in one llama_exporter (one /probe per distinct loopback target) and measure its CPU, RSS and /probe latency in steady state, and the loss it reports.")
	m.cmd = c
	addExporterFlags(c, &m.ef, true)
	c.Flag("sessions", "N: probe sessions (distinct targets 127.1.0.1, 127.1.0.2, ... on one reflector port).").Default("10000").IntVar(&m.Sessions)
	c.Flag("interval", "Module interval: time between two probes of one session.").Default("1s").DurationVar(&m.Interval)
	c.Flag("probe-timeout", "Module timeout.").Default("1s").DurationVar(&m.ProbeTimeout)
	c.Flag("window", "Module window.").Default("30s").DurationVar(&m.Window)
	c.Flag("flows", "Module flows (source ports).").Default("8").IntVar(&m.Flows)
	c.Flag("duration", "D: measured steady-state period.").Default("30s").DurationVar(&m.Duration)
	c.Flag("warmup", "Wait after the last session is created before measuring.").Default("5s").DurationVar(&m.Warmup)
	c.Flag("create.concurrency", "Concurrent first /probe requests while creating sessions (each waits for its first probe).").Default("256").IntVar(&m.CreateConcurrency)
	c.Flag("create.timeout", "Give up if creating the sessions takes longer.").Default("3m").DurationVar(&m.CreateTimeout)
	c.Flag("scrape.rate", "/probe scrapes per second of random targets during the measured period.").Default("20").Float64Var(&m.ScrapeRate)
	c.Flag("scrape.concurrency", "Concurrent scrapes at most during the measured period.").Default("8").IntVar(&m.ScrapeConcurrency)
	c.Flag("scrape.gzip", "Ask for gzip in every /probe request, as Prometheus does unless its scrape job sets enable_compression: false. Off by default, so that figures compare with earlier runs.").BoolVar(&m.ScrapeGzip)
	c.Flag("reflector", "separate: a second llama_exporter process reflects (its CPU is reported apart); embedded: the exporter's own reflector.").Default("separate").EnumVar(&m.Reflector, "separate", "embedded")
	c.Flag("cpu.exporter", "CPU list to pin the exporter to; empty: no pinning.").StringVar(&m.CPUExporter)
	c.Flag("cpu.reflector", "CPU list to pin the separate reflector to; empty: no pinning.").StringVar(&m.CPUReflector)
	c.Flag("sweep", "After the measured period, scrape every target once and sum the loss counters.").Default("true").BoolVar(&m.Sweep)
	c.Flag("sweep.concurrency", "Concurrent scrapes in the final sweep.").Default("32").IntVar(&m.SweepConcurrency)
	c.Flag("baseline", "Before creating the sessions, run a plain per-packet Go prober (one system call per probe and per reply, user-space timestamps, counts only) for --duration against the same targets at the same rate, pinned like the exporter, and report its CPU next to the exporter's.").Default("true").BoolVar(&m.Baseline)
	c.Flag("prober", "Module prober: stamp probes the reflector; icmp pings the targets; tcp connects to a listener on the targets' port, which this tool runs.").Default("stamp").EnumVar(&m.Prober, "stamp", "icmp", "tcp")
	c.Flag("peer.smokeping", "Path of a smokeping_prober binary: before creating the sessions, run it against the same targets at the same interval (privileged ICMP) for --duration and report the exporter's CPU against its.").StringVar(&m.PeerSmokeping)
	return m
}

func (m *sessionsMode) check() error {
	switch {
	case m.Sessions < 1 || m.Sessions > maxSessions:
		return fmt.Errorf("--sessions=%d: want 1..%d", m.Sessions, maxSessions)
	case m.Interval < time.Millisecond || m.Interval > time.Minute:
		return fmt.Errorf("--interval=%v: want 1ms..1m", m.Interval)
	case m.ProbeTimeout < time.Millisecond || m.ProbeTimeout > time.Minute:
		return fmt.Errorf("--probe-timeout=%v: want 1ms..1m", m.ProbeTimeout)
	case m.Window < m.Interval || m.Window > time.Hour:
		return fmt.Errorf("--window=%v: want --interval..1h", m.Window)
	case m.Flows < 1 || m.Flows > 1024:
		return fmt.Errorf("--flows=%d: want 1..1024", m.Flows)
	case m.Duration <= 0 || m.Duration > 30*time.Minute:
		return fmt.Errorf("--duration=%v: want more than 0 and at most 30m", m.Duration)
	case m.Warmup < 0 || m.Warmup > 10*time.Minute:
		return fmt.Errorf("--warmup=%v: want 0..10m", m.Warmup)
	case m.CreateConcurrency < 1 || m.CreateConcurrency > 4096:
		return fmt.Errorf("--create.concurrency=%d: want 1..4096", m.CreateConcurrency)
	case m.CreateTimeout <= 0:
		return fmt.Errorf("--create.timeout=%v: want more than 0", m.CreateTimeout)
	case m.ScrapeRate < 0 || m.ScrapeRate > 10000 || math.IsNaN(m.ScrapeRate):
		return fmt.Errorf("--scrape.rate=%v: want 0..10000", m.ScrapeRate)
	case m.ScrapeConcurrency < 1 || m.ScrapeConcurrency > 1024:
		return fmt.Errorf("--scrape.concurrency=%d: want 1..1024", m.ScrapeConcurrency)
	case m.SweepConcurrency < 1 || m.SweepConcurrency > 1024:
		return fmt.Errorf("--sweep.concurrency=%d: want 1..1024", m.SweepConcurrency)
	case m.Reflector == "embedded" && m.CPUReflector != "":
		return errors.New("--cpu.reflector needs --reflector=separate")
	}
	return nil
}

func (m *sessionsMode) validate() error {
	if err := m.check(); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.exporter", m.CPUExporter); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.reflector", m.CPUReflector); err != nil {
		return err
	}
	return m.ef.validate()
}

// sessionTarget is the i-th target (0-based): a distinct loopback address,
// 127.1.0.1, 127.1.0.2, ... 127.1.0.254, 127.1.1.1, ... (last octets 0 and
// 255 are skipped), all reaching one reflector bound to 0.0.0.0:port.
func sessionTarget(i, port int) string {
	hi, lo := i/254, i%254+1
	a := netip.AddrFrom4([4]byte{127, byte(1 + hi/256), byte(hi % 256), byte(lo)})
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// durationMS formats d for the YAML config in milliseconds, which every
// duration parser accepts.
func durationMS(d time.Duration) string {
	if d%time.Millisecond != 0 {
		return d.String()
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

const sessionsModule = "loadtest"

func (m *sessionsMode) config(port int) string {
	portLine := fmt.Sprintf("\n    port: %d", port)
	if m.Prober == "icmp" {
		portLine = ""
	}
	return fmt.Sprintf(`# written by llama-loadtest sessions
modules:
  %s:
    prober: %s
    interval: %s
    timeout: %s
    window: %s
    flows: %d%s
    ip_protocol: ip4
`, sessionsModule, m.Prober, durationMS(m.Interval), durationMS(m.ProbeTimeout), durationMS(m.Window), m.Flows, portLine)
}

// target is the i-th session's /probe target: sessionTarget, without the
// port for the icmp prober, which has none.
func (m *sessionsMode) target(i, port int) string {
	t := sessionTarget(i, port)
	if m.Prober == "icmp" {
		return netip.MustParseAddrPort(t).Addr().String()
	}
	return t
}

func probeURL(webAddr, module, target string, debug bool) string {
	q := url.Values{"module": {module}, "target": {target}}
	if debug {
		q.Set("debug", "true")
	}
	return "http://" + webAddr + "/probe?" + q.Encode()
}

func (m *sessionsMode) run(e *env) error {
	r, err := m.startProcesses(e)
	if err != nil {
		return err
	}
	idle, _ := procmeter.ProcessMem(r.exp.PID)
	r.printSetup(idle)
	base, err := r.runBaseline()
	if err != nil {
		return err
	}
	peer, err := r.runPeer()
	if err != nil {
		return err
	}
	r.client = &http.Client{
		Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: m.CreateConcurrency + m.ScrapeConcurrency + m.SweepConcurrency,
			DisableCompression: !m.ScrapeGzip},
		Timeout: 60 * time.Second,
	}
	defer r.client.CloseIdleConnections()
	created, err := r.createSessions()
	if err != nil {
		return err
	}
	logf("warm-up %v", m.Warmup)
	if err := sleepCtx(e.ctx, m.Warmup); err != nil {
		return err
	}
	st, err := r.measure()
	if err != nil {
		return err
	}
	toBaseline := r.printSteady(st, idle, base)
	res := r.results(created, st, idle, base, toBaseline)
	r.printPeer(st, peer, res)
	if m.Sweep {
		if err := r.sweepTargets(res); err != nil {
			return err
		}
	}
	report.JSONLine(e.out, res)
	return nil
}

// sessionsRun is one run of the sessions mode: the processes it started,
// where they listen, and the client of its scrapes.
type sessionsRun struct {
	m       *sessionsMode
	e       *env
	rport   int    // the reflector's UDP port, on every target
	webAddr string // the exporter's HTTP address
	// reflWeb is the HTTP address of the process that reflects: the
	// exporter's with --reflector=embedded.
	reflWeb string
	refl    *child // the separate reflector; nil with --reflector=embedded
	exp     *child
	client  *http.Client
}

// startProcesses writes the exporter's config file and starts the separate
// reflector, with --reflector=separate, and the exporter, each up to the
// point where it answers HTTP and reflects probes.
func (m *sessionsMode) startProcesses(e *env) (*sessionsRun, error) {
	rport, err := freeUDPPort("0.0.0.0")
	if err != nil {
		return nil, err
	}
	webPort, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	r := &sessionsRun{m: m, e: e, rport: rport, webAddr: fmt.Sprintf("127.0.0.1:%d", webPort)}
	r.reflWeb = r.webAddr
	if m.Prober == "tcp" {
		l, err := serveTCP(rport)
		if err != nil {
			return nil, fmt.Errorf("the tcp prober's target listener: %w", err)
		}
		go func() { <-e.ctx.Done(); l.Close() }()
	}
	cfgPath := filepath.Join(e.dir, "loadtest.yml")
	if err := os.WriteFile(cfgPath, []byte(m.config(rport)), 0o644); err != nil {
		return nil, err
	}
	reflFlags := []string{fmt.Sprintf("--reflector.listen-address=0.0.0.0:%d", rport),
		"--reflector.max-pps=0", "--reflector.max-pps-per-source=0"}
	if m.Reflector == "separate" {
		if err := r.startReflector(reflFlags); err != nil {
			return nil, err
		}
	}
	if err := r.startExporter(cfgPath, reflFlags); err != nil {
		return nil, err
	}
	return r, nil
}

// firstTarget is the first session's target, whose replies show that a
// reflector answers.
func (r *sessionsRun) firstTarget() netip.AddrPort {
	t, _ := netip.ParseAddrPort(sessionTarget(0, r.rport))
	return t
}

// startReflector starts the separate reflector, an exporter with reflFlags
// and its own web port, and waits until it answers HTTP and probes.
func (r *sessionsRun) startReflector(reflFlags []string) error {
	p, err := freeTCPPort()
	if err != nil {
		return err
	}
	r.reflWeb = fmt.Sprintf("127.0.0.1:%d", p)
	r.refl, err = r.e.sup.start("reflector", r.m.CPUReflector, r.m.ef.argv(append(reflFlags, "--web.listen-address="+r.reflWeb)...)...)
	if err != nil {
		return err
	}
	if err := waitHTTPReady(r.e.ctx, r.refl, r.reflWeb, 15*time.Second); err != nil {
		return err
	}
	return gen.WaitReflector(r.e.ctx, r.firstTarget(), gen.ReplySTAMP, 10*time.Second, deadFunc(r.refl))
}

// startExporter starts the exporter with the config at cfgPath, and with
// reflFlags unless the reflector is separate, and waits until it answers
// HTTP and, reflecting itself, probes.
func (r *sessionsRun) startExporter(cfgPath string, reflFlags []string) error {
	args := []string{"--config.file=" + cfgPath, "--web.listen-address=" + r.webAddr,
		fmt.Sprintf("--probe.max-targets=%d", 2*r.m.Sessions+100)}
	if r.m.Reflector == "separate" {
		args = append(args, "--no-reflector")
	} else {
		args = append(args, reflFlags...)
	}
	var err error
	r.exp, err = r.e.sup.start("exporter", r.m.CPUExporter, r.m.ef.argv(args...)...)
	if err != nil {
		return err
	}
	if err := waitHTTPReady(r.e.ctx, r.exp, r.webAddr, 15*time.Second); err != nil {
		return err
	}
	if r.refl == nil {
		return gen.WaitReflector(r.e.ctx, r.firstTarget(), gen.ReplySTAMP, 10*time.Second, deadFunc(r.exp))
	}
	return nil
}

// printSetup prints the run's first line: what it tests, where, and the
// idle exporter's memory.
func (r *sessionsRun) printSetup(idle procmeter.Mem) {
	m := r.m
	fmt.Fprintf(r.e.out, "# sessions: %d targets 127.1.0.1.. port %d, module interval %v timeout %v window %v flows %d, reflector %s; exporter pid %d on CPU %s, reflector on CPU %s; idle exporter RSS %s\n",
		m.Sessions, r.rport, m.Interval, m.ProbeTimeout, m.Window, m.Flows, m.Reflector, r.exp.PID, orNone(m.CPUExporter), orNone(m.CPUReflector), report.Bytes(idle.RSS))
}

// results is the run's JSON line, without the sweep's figures.
func (r *sessionsRun) results(c *creation, s *steadyState, idle procmeter.Mem, base *baselineResult, toBaseline float64) map[string]any {
	m := r.m
	res := map[string]any{
		"mode": "sessions", "sessions": m.Sessions, "sessions_created": c.ok, "sessions_gauge": c.gauge,
		"interval_s": m.Interval.Seconds(), "timeout_s": m.ProbeTimeout.Seconds(), "window_s": m.Window.Seconds(), "flows": m.Flows,
		"reflector": m.Reflector, "cpu_exporter": m.CPUExporter, "cpu_reflector": m.CPUReflector,
		"create_s": report.Round2(c.took.Seconds()), "create_first_probe_p50_ms": report.Round2(c.p50 * 1e3), "create_first_probe_p99_ms": report.Round2(c.p99 * 1e3),
		"scrape_rate": m.ScrapeRate,
		"scrape_gzip": m.ScrapeGzip,
	}
	maps.Copy(res, s.results(m, idle))
	if base != nil {
		res["baseline_cpu_pct"] = report.Round2(base.cpu.Percent())
		res["baseline_cpu_us_per_probe"] = report.Round2(base.usPerProbe)
		res["baseline_sent"], res["baseline_received"] = base.sent, base.received
		res["exporter_to_baseline_cpu"] = report.Round2(toBaseline)
	}
	return res
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func deadFunc(c *child) func() error {
	return func() error {
		if c.Exited() {
			return c.exitError()
		}
		return nil
	}
}
