//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/gen"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
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

// latencies collects request latencies from several goroutines.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	errs int
	err  error
}

func (l *latencies) add(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs++
		if l.err == nil {
			l.err = err
		}
		return
	}
	l.d = append(l.d, d)
}

// stats returns p50, p90, p99 and max in seconds.
func (l *latencies) stats() (p50, p90, p99, maxv float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := durationQuantiles(l.d, 0.5, 0.9, 0.99, 1)
	return q[0.5], q[0.9], q[0.99], q[1]
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
	jsonLine(e.out, res)
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
		m.Sessions, r.rport, m.Interval, m.ProbeTimeout, m.Window, m.Flows, m.Reflector, r.exp.PID, orNone(m.CPUExporter), orNone(m.CPUReflector), fmtBytes(idle.RSS))
}

// runBaseline runs the plain prober, with --baseline, and prints what it
// cost; without --baseline it returns nil.
func (r *sessionsRun) runBaseline() (*baselineResult, error) {
	if !r.m.Baseline {
		return nil, nil
	}
	if r.m.Prober != "stamp" {
		logf("baseline: the plain prober sends STAMP probes, so it runs with --prober=stamp only")
		return nil, nil
	}
	logf("baseline: plain per-packet Go prober for %v", r.m.Duration)
	base, err := r.m.baseline(r.e, r.rport)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(r.e.out, "sessions baseline, plain per-packet Go prober, same targets and rate: CPU %.2fs = %s of one core (%.2f µs per probe); sent %d received %d (loss %.4f%%), mean RTT %s\n",
		base.cpu.CPU.Seconds(), fmtPct(base.cpu.Percent()), base.usPerProbe, base.sent, base.received,
		100*ratio(float64(base.sent-min(base.sent, base.received)), float64(base.sent)), fmtSeconds(base.meanRTT.Seconds()))
	return base, nil
}

// creation is what creating the sessions measured.
type creation struct {
	*createResult
	took     time.Duration
	p50, p99 float64 // first /probe latency, seconds
	gauge    float64 // llama_exporter_sessions once created
}

// createSessions creates the sessions, one first /probe per target, and
// prints how long that took and what the exporter then holds.
func (r *sessionsRun) createSessions() (*creation, error) {
	m, ctx := r.m, r.e.ctx
	logf("creating %d sessions, %d at a time", m.Sessions, m.CreateConcurrency)
	start := time.Now()
	res, err := m.create(ctx, r.client, r.webAddr, r.rport, r.exp)
	c := &creation{createResult: res, took: time.Since(start)}
	if err != nil {
		return nil, err
	}
	var maxv float64
	c.p50, _, c.p99, maxv = res.lat.stats()
	metrics, _, err := fetchMetrics(ctx, r.client, "http://"+r.webAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	c.gauge = metrics.get("llama_exporter_sessions")
	mem, _ := procmeter.ProcessMem(r.exp.PID)
	fmt.Fprintf(r.e.out, "sessions created: %d of %d in %.1fs (%.0f/s); first /probe p50 %s p99 %s max %s; non-200 %d, errors %d; probe_success=1 on first scrape %d; llama_exporter_sessions %.0f; exporter RSS %s\n",
		res.ok, m.Sessions, c.took.Seconds(), float64(res.ok)/c.took.Seconds(),
		fmtSeconds(c.p50), fmtSeconds(c.p99), fmtSeconds(maxv), res.non200, res.lat.errs, res.success, c.gauge, fmtBytes(mem.RSS))
	if res.ok < m.Sessions {
		logf("warning: only %d of %d sessions created (first error: %v)", res.ok, m.Sessions, res.firstErr)
	}
	return c, nil
}

// steadyState is what the measured period saw.
type steadyState struct {
	elapsed             time.Duration
	exp, refl           *procmeter.CPUMeter // refl is nil with --reflector=embedded
	machine             procmeter.MachineMeter
	expDrops, reflDrops uint64 // receive-buffer drops over the period
	scr                 *latencies
	issued              int   // scrapes started
	skipped             int64 // scrapes not started, all workers busy
	reflPPS, throttled  float64
	memEnd              procmeter.Mem
	threads             int
	expMetrics          metricFamilies
}

// measure scrapes random targets for --duration, metering the CPU of the
// processes and of the machine, then reads the counters that the period
// moved.
func (r *sessionsRun) measure() (*steadyState, error) {
	m, ctx := r.m, r.e.ctx
	encoding := "uncompressed"
	if m.ScrapeGzip {
		encoding = "gzip"
	}
	logf("measuring %v, %.0f scrapes/s, %s", m.Duration, m.ScrapeRate, encoding)
	reflMetrics0, _, err := fetchMetrics(ctx, r.client, "http://"+r.reflWeb+"/metrics")
	if err != nil {
		return nil, err
	}
	s := &steadyState{scr: &latencies{}, exp: procmeter.NewCPUMeter(func() (time.Duration, error) { return procmeter.ProcessCPU(r.exp.PID) })}
	if r.refl != nil {
		s.refl = procmeter.NewCPUMeter(func() (time.Duration, error) { return procmeter.ProcessCPU(r.refl.PID) })
	}
	expDrops0, reflDrops0 := r.udpDrops()
	start := time.Now()
	s.machine.Start()
	s.exp.Start()
	s.refl.Start()
	var skipped atomic.Int64
	s.issued = m.steady(ctx, r.client, r.webAddr, r.rport, s.scr, &skipped)
	s.exp.Stop()
	s.refl.Stop()
	s.machine.Stop()
	s.elapsed = time.Since(start)
	s.skipped = skipped.Load()
	expDrops, reflDrops := r.udpDrops()
	s.expDrops, s.reflDrops = expDrops-expDrops0, reflDrops-reflDrops0
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.exp.Exited() {
		return nil, r.exp.exitError()
	}
	return s, r.readAfter(s, reflMetrics0)
}

// udpDrops returns the receive-buffer drops so far of the exporter's
// sockets and of the separate reflector's (0 with --reflector=embedded).
func (r *sessionsRun) udpDrops() (exp, refl uint64) {
	exp = procmeter.ProcessUDPDrops(r.exp.PID)
	if r.refl != nil {
		refl = procmeter.ProcessUDPDrops(r.refl.PID)
	}
	return exp, refl
}

// readAfter completes s after the measured period: the packets reflected
// since reflMetrics0, the reflector's throttled count, and the exporter's
// memory, threads and metrics.
func (r *sessionsRun) readAfter(s *steadyState, reflMetrics0 metricFamilies) error {
	ctx := r.e.ctx
	reflMetrics1, _, err := fetchMetrics(ctx, r.client, "http://"+r.reflWeb+"/metrics")
	if err != nil {
		return err
	}
	s.memEnd, _ = procmeter.ProcessMem(r.exp.PID)
	st, _ := procmeter.ReadStat(fmt.Sprintf("/proc/%d/stat", r.exp.PID))
	s.threads = st.Threads
	if s.expMetrics, _, err = fetchMetrics(ctx, r.client, "http://"+r.webAddr+"/metrics"); err != nil {
		return err
	}
	s.reflPPS = (reflMetrics1.get("llama_reflector_packets_reflected_total") - reflMetrics0.get("llama_reflector_packets_reflected_total")) / s.elapsed.Seconds()
	s.throttled = reflMetrics1.get("llama_reflector_packets_throttled_total")
	return nil
}

// expectedPPS is the probes per second that the sessions send.
func (m *sessionsMode) expectedPPS() float64 {
	return float64(m.Sessions) / m.Interval.Seconds()
}

// expectedReflected is the rate at which the reflector should answer: the
// probe rate for stamp, 0 for the probers whose targets answer themselves.
func (m *sessionsMode) expectedReflected() float64 {
	if m.Prober != "stamp" {
		return 0
	}
	return m.expectedPPS()
}

// printSteady prints what the measured period saw, and returns the
// exporter's CPU share over the baseline's (0 without a baseline).
func (r *sessionsRun) printSteady(s *steadyState, idle procmeter.Mem, base *baselineResult) (toBaseline float64) {
	m, out := r.m, r.e.out
	sp50, sp90, sp99, smax := s.scr.stats()
	fmt.Fprintf(out, "sessions steady state %d sessions over %.1fs: exporter CPU %.2fs = %s of one core (%.2f µs per probe), reflector CPU %s; probes reflected %.0f/s (expected %.0f/s); throttled %.0f\n",
		m.Sessions, s.elapsed.Seconds(), s.exp.CPU.Seconds(), fmtPct(s.exp.Percent()),
		1e6*s.exp.CPU.Seconds()/(m.expectedPPS()*s.elapsed.Seconds()), fmtPct(s.refl.Percent()), s.reflPPS, m.expectedReflected(), s.throttled)
	fmt.Fprintf(out, "sessions receive-buffer drops over the period: exporter sockets %d, reflector sockets %d; machine: %s\n",
		s.expDrops, s.reflDrops, procmeter.FormatCPUUsage(s.machine.Usage))
	fmt.Fprintf(out, "sessions exporter memory: RSS %s (%.1f KiB per session over idle), peak %s, threads %d\n",
		fmtBytes(s.memEnd.RSS), (float64(s.memEnd.RSS)-float64(idle.RSS))/1024/float64(m.Sessions), fmtBytes(s.memEnd.HWM), s.threads)
	fmt.Fprintf(out, "sessions /probe latency over %d scrapes (%d started, %d errors, %d skipped with all %d workers busy): p50 %s p90 %s p99 %s max %s\n",
		len(s.scr.d), s.issued, s.scr.errs, s.skipped, m.ScrapeConcurrency, fmtSeconds(sp50), fmtSeconds(sp90), fmtSeconds(sp99), fmtSeconds(smax))
	if s.scr.err != nil {
		logf("first scrape error: %v", s.scr.err)
	}
	if base != nil {
		toBaseline = ratio(s.exp.CPU.Seconds()/s.elapsed.Seconds(), base.cpu.CPU.Seconds()/base.cpu.Wall.Seconds())
		fmt.Fprintf(out, "sessions exporter CPU / baseline CPU: %.2f\n", toBaseline)
	}
	return toBaseline
}

// results is the run's JSON line, without the sweep's figures.
func (r *sessionsRun) results(c *creation, s *steadyState, idle procmeter.Mem, base *baselineResult, toBaseline float64) map[string]any {
	m := r.m
	res := map[string]any{
		"mode": "sessions", "sessions": m.Sessions, "sessions_created": c.ok, "sessions_gauge": c.gauge,
		"interval_s": m.Interval.Seconds(), "timeout_s": m.ProbeTimeout.Seconds(), "window_s": m.Window.Seconds(), "flows": m.Flows,
		"reflector": m.Reflector, "cpu_exporter": m.CPUExporter, "cpu_reflector": m.CPUReflector,
		"create_s": round2(c.took.Seconds()), "create_first_probe_p50_ms": round2(c.p50 * 1e3), "create_first_probe_p99_ms": round2(c.p99 * 1e3),
		"scrape_rate": m.ScrapeRate,
		"scrape_gzip": m.ScrapeGzip,
	}
	maps.Copy(res, s.results(m, idle))
	if base != nil {
		res["baseline_cpu_pct"] = round2(base.cpu.Percent())
		res["baseline_cpu_us_per_probe"] = round2(base.usPerProbe)
		res["baseline_sent"], res["baseline_received"] = base.sent, base.received
		res["exporter_to_baseline_cpu"] = round2(toBaseline)
	}
	return res
}

// results is the measured period's part of the run's JSON line.
func (s *steadyState) results(m *sessionsMode, idle procmeter.Mem) map[string]any {
	sp50, sp90, sp99, smax := s.scr.stats()
	return map[string]any{
		"duration_s":                round2(s.elapsed.Seconds()),
		"exporter_cpu_s":            round2(s.exp.CPU.Seconds()),
		"exporter_cpu_pct":          round2(s.exp.Percent()),
		"exporter_cpu_us_per_probe": round2(1e6 * s.exp.CPU.Seconds() / (m.expectedPPS() * s.elapsed.Seconds())),
		"reflector_cpu_pct":         round2(s.refl.Percent()),
		"exporter_rss_mib":          round2(float64(s.memEnd.RSS) / (1 << 20)),
		"exporter_rss_idle_mib":     round2(float64(idle.RSS) / (1 << 20)),
		"exporter_rss_peak_mib":     round2(float64(s.memEnd.HWM) / (1 << 20)),
		"exporter_threads":          s.threads,
		"expected_pps":              math.Round(m.expectedPPS()),
		"reflected_pps":             math.Round(s.reflPPS),
		"reflector_throttled":       s.throttled,
		"send_errors":               s.expMetrics.get("llama_exporter_send_errors_total"),
		"replies_unmatched":         s.expMetrics.get("llama_exporter_replies_unmatched_total"),
		"exporter_socket_drops":     s.expDrops,
		"reflector_socket_drops":    s.reflDrops,
		"machine_busy_pct":          s.machine.JSON(),
		"scrapes":                   len(s.scr.d),
		"scrapes_started":           s.issued,
		"scrape_errors":             s.scr.errs,
		"probe_latency_p50_ms":      round2(sp50 * 1e3),
		"probe_latency_p90_ms":      round2(sp90 * 1e3),
		"probe_latency_p99_ms":      round2(sp99 * 1e3),
		"probe_latency_max_ms":      round2(smax * 1e3),
	}
}

// sweepTargets scrapes every target once, prints the loss summed over
// them, and adds it to res.
func (r *sessionsRun) sweepTargets(res map[string]any) error {
	m := r.m
	logf("sweeping all %d targets", m.Sessions)
	sw, err := m.sweep(r.e.ctx, r.client, r.webAddr, r.rport)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.e.out, "sessions loss over all %d targets (%d scraped in %.1fs): sent %.0f received %.0f lost %.0f (%.4f%%) late %.0f duplicated %.0f reordered %.0f; window: sent %.0f lost %.0f (%.4f%%); targets with probe_success 0: %d; window p50 RTT median %s, window p99 RTT max %s\n",
		m.Sessions, sw.scraped, sw.took.Seconds(), sw.sent, sw.received, sw.lost, 100*ratio(sw.lost, sw.sent), sw.late, sw.dup, sw.reordered,
		sw.wsent, sw.wlost, 100*ratio(sw.wlost, sw.wsent), sw.down, fmtSeconds(sw.p50Median), fmtSeconds(sw.p99Max))
	maps.Copy(res, map[string]any{
		"sum_sent": sw.sent, "sum_received": sw.received, "sum_lost": sw.lost, "loss_ratio": ratio(sw.lost, sw.sent),
		"sum_late": sw.late, "sum_duplicated": sw.dup, "sum_reordered": sw.reordered,
		"window_sent": sw.wsent, "window_lost": sw.wlost, "window_loss_ratio": ratio(sw.wlost, sw.wsent),
		"targets_down": sw.down, "sweep_errors": sw.errs, "window_rtt_p50_median_us": micros(sw.p50Median), "window_rtt_p99_max_us": micros(sw.p99Max),
	})
	return nil
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

// createResult is what creating the sessions counted; mu guards it while
// the workers run.
type createResult struct {
	mu       sync.Mutex
	lat      latencies
	ok       int
	non200   int
	success  int
	firstErr error
}

// create requests /probe once for every target, CreateConcurrency at a
// time. The first scrape of a session waits for its first probe, so the
// scrape timeout header is generous.
func (m *sessionsMode) create(ctx context.Context, client *http.Client, webAddr string, port int, exp *child) (*createResult, error) {
	ctx, cancel := context.WithTimeout(ctx, m.CreateTimeout)
	defer cancel()
	res := &createResult{}
	idx := make(chan int)
	wg := startWorkers(m.CreateConcurrency, idx, func(i int) {
		res.createOne(ctx, client, probeURL(webAddr, sessionsModule, m.target(i, port), false))
	})
	res.feed(ctx, idx, m.Sessions, exp)
	close(idx)
	wg.Wait()
	if exp.Exited() {
		return nil, exp.exitError()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("creating sessions: %w (%d created)", err, res.ok)
	}
	return res, nil
}

// startWorkers starts n goroutines that call work with each index idx
// brings, until it is closed; the WaitGroup waits for them to end.
func startWorkers(n int, idx <-chan int, work func(i int)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				work(i)
			}
		}()
	}
	return &wg
}

// feed hands the indexes of the n sessions to the workers through idx,
// and logs how many exist every 5 s, until every index is handed out, the
// exporter has exited or ctx is done.
func (res *createResult) feed(ctx context.Context, idx chan<- int, n int, exp *child) {
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
feed:
	for i := range n {
		for {
			select {
			case idx <- i:
				continue feed
			case <-progress.C:
				res.mu.Lock()
				logf("  %d sessions created", res.ok)
				res.mu.Unlock()
				if exp.Exited() {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}
}

// createOne requests /probe at u once, which creates its session, and
// counts the answer and its latency.
func (res *createResult) createOne(ctx context.Context, client *http.Client, u string) {
	t0 := time.Now()
	code, body, err := get(ctx, client, u, 10)
	d := time.Since(t0)
	res.count(code, body, err)
	if code == http.StatusOK {
		res.lat.add(d, nil)
	} else {
		res.lat.add(d, errors.New("failed"))
	}
}

// count counts a first /probe's answer: a session created, and with
// probe_success 1, or a failure, the first of which is kept.
func (res *createResult) count(code int, body string, err error) {
	res.mu.Lock()
	defer res.mu.Unlock()
	switch {
	case err != nil:
		if res.firstErr == nil {
			res.firstErr = err
		}
	case code != http.StatusOK:
		res.non200++
		if res.firstErr == nil {
			res.firstErr = fmt.Errorf("HTTP %d: %s", code, body)
		}
	default:
		res.ok++
		if v, ok := sampleValue(body, "probe_success"); ok && v == 1 {
			res.success++
		}
	}
}

// get fetches url and returns the status and body; timeoutHeader, when
// positive, is sent as X-Prometheus-Scrape-Timeout-Seconds.
func get(ctx context.Context, client *http.Client, u string, timeoutHeader float64) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	if timeoutHeader > 0 {
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprint(timeoutHeader))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// steady scrapes random targets at ScrapeRate for Duration and returns how
// many scrapes it started.
func (m *sessionsMode) steady(ctx context.Context, client *http.Client, webAddr string, port int, scr *latencies, skipped *atomic.Int64) (issued int) {
	ctx, cancel := context.WithTimeout(ctx, m.Duration)
	defer cancel()
	jobs := make(chan int, m.ScrapeConcurrency)
	var wg sync.WaitGroup
	for range m.ScrapeConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t0 := time.Now()
				code, body, err := get(ctx, client, probeURL(webAddr, sessionsModule, m.target(i, port), false), 10)
				if ctx.Err() != nil {
					return // cut short by the end of the period: not a sample
				}
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("HTTP %d: %.200s", code, body)
				}
				scr.add(time.Since(t0), err)
			}
		}()
	}
	var tick <-chan time.Time
	if m.ScrapeRate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / m.ScrapeRate))
		defer t.Stop()
		tick = t.C
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick:
			select {
			case jobs <- rand.IntN(m.Sessions):
				issued++
			default:
				skipped.Add(1)
			}
		}
	}
	close(jobs)
	wg.Wait()
	return issued
}

type sweepResult struct {
	scraped, errs, down                        int
	sent, received, lost, late, dup, reordered float64
	wsent, wlost                               float64
	p50Median, p99Max                          float64
	took                                       time.Duration
}

// sweep scrapes every target once and sums its counters.
func (m *sessionsMode) sweep(ctx context.Context, client *http.Client, webAddr string, port int) (*sweepResult, error) {
	start := time.Now()
	sum := &sweepSum{}
	idx := make(chan int)
	wg := startWorkers(m.SweepConcurrency, idx, func(i int) {
		mfs, _, err := fetchMetrics(ctx, client, probeURL(webAddr, sessionsModule, m.target(i, port), false))
		sum.add(mfs, err)
	})
feed:
	for i := range m.Sessions {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return sum.result(start), nil
}

// sweepSum is the sweep's sums as the workers scrape; mu guards it.
type sweepSum struct {
	mu         sync.Mutex
	res        sweepResult
	p50s, p99s []float64 // the window RTT quantiles of the targets that have them
	firstErr   error
}

// add adds the counters of one target's scrape mfs, or counts its error.
func (s *sweepSum) add(mfs metricFamilies, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := &s.res
	if err != nil {
		res.errs++
		if s.firstErr == nil {
			s.firstErr = err
		}
		return
	}
	res.scraped++
	res.sent += mfs.get("llama_probe_packets_sent_total")
	res.received += mfs.get("llama_probe_packets_received_total")
	res.lost += mfs.get("llama_probe_packets_lost_total")
	res.late += mfs.get("llama_probe_packets_late_total")
	res.dup += mfs.get("llama_probe_packets_duplicated_total")
	res.reordered += mfs.get("llama_probe_packets_reordered_total")
	res.wsent += mfs.get("llama_probe_window_packets_sent")
	res.wlost += mfs.get("llama_probe_window_packets_lost")
	if mfs.get("probe_success") != 1 {
		res.down++
	}
	if v := mfs.summaryQuantile("llama_probe_window_rtt_seconds", 0.5); !math.IsNaN(v) {
		s.p50s = append(s.p50s, v)
	}
	if v := mfs.summaryQuantile("llama_probe_window_rtt_seconds", 0.99); !math.IsNaN(v) {
		s.p99s = append(s.p99s, v)
	}
}

// result logs the sweep's errors, if any, and completes its sums with the
// median of the targets' p50 RTTs, the largest p99 RTT, and the time since
// start.
func (s *sweepSum) result(start time.Time) *sweepResult {
	if s.firstErr != nil {
		logf("sweep: %d errors, first: %v", s.res.errs, s.firstErr)
	}
	slices.Sort(s.p50s)
	slices.Sort(s.p99s)
	s.res.p50Median = quantile(s.p50s, 0.5)
	s.res.p99Max = quantile(s.p99s, 1)
	s.res.took = time.Since(start)
	return &s.res
}

// baselineResult is the plain prober's run: its CPU over the measured
// period and what it counted.
type baselineResult struct {
	plainResult
	cpu        *procmeter.CPUMeter
	usPerProbe float64
}

// baseline runs the hidden plain-prober subcommand against the sessions'
// targets for a short warm-up and then --duration, measuring its CPU over
// the latter.
func (m *sessionsMode) baseline(e *env, port int) (*baselineResult, error) {
	const warm = 2 * time.Second
	c, err := e.sup.start("plain-prober", m.CPUExporter, selfExe(), "plain-prober",
		fmt.Sprintf("--port=%d", port), fmt.Sprintf("--targets=%d", m.Sessions), fmt.Sprintf("--flows=%d", m.Flows),
		"--interval="+m.Interval.String(), "--for="+(warm+m.Duration).String())
	if err != nil {
		return nil, err
	}
	defer e.sup.stop(c, 3*time.Second)
	meter, err := meterChild(e, c, warm, m.Duration)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("plain prober (pid %d) did not finish", c.PID)
	case <-e.ctx.Done():
		return nil, e.ctx.Err()
	}
	if c.err != nil {
		return nil, c.exitError()
	}
	if !meter.Available {
		return nil, errors.New("plain prober: its CPU time could not be read")
	}
	log, err := os.ReadFile(c.Log)
	if err != nil {
		return nil, err
	}
	r, err := parsePlainResult(log)
	if err != nil {
		return nil, err
	}
	probes := float64(m.Sessions) / m.Interval.Seconds() * meter.Wall.Seconds()
	return &baselineResult{plainResult: r, cpu: meter, usPerProbe: 1e6 * meter.CPU.Seconds() / probes}, nil
}
