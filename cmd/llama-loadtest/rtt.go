//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

// rttMode is "llama-loadtest rtt": RTT quantiles over loopback as the
// exporter reports them, optionally while CPU-bound processes compete.
type rttMode struct {
	cmd          *kingpin.CmdClause
	ef           exporterFlags
	Probes       int
	Interval     time.Duration
	ProbeTimeout time.Duration
	Flows        int
	Burners      int
	CPUExporter  string
	CPUBurners   string
}

func addRTTCmd(app *kingpin.Application) *rttMode {
	m := &rttMode{}
	c := app.Command("rtt", "Run llama_exporter probing its own reflector over loopback and report the RTT quantiles of M probes from /probe's window summary, optionally with CPU burners running.")
	m.cmd = c
	addExporterFlags(c, &m.ef, true)
	c.Flag("probes", "M: probes in the summary window.").Default("10000").IntVar(&m.Probes)
	c.Flag("interval", "Module interval between two probes.").Default("1ms").DurationVar(&m.Interval)
	c.Flag("probe-timeout", "Module timeout.").Default("1s").DurationVar(&m.ProbeTimeout)
	c.Flag("flows", "Module flows (source ports).").Default("8").IntVar(&m.Flows)
	c.Flag("burners", "CPU-bound busy-loop processes to run alongside (this tool's hidden burn subcommand).").Default("0").IntVar(&m.Burners)
	c.Flag("cpu.exporter", "CPU list to pin the exporter to; empty: no pinning.").StringVar(&m.CPUExporter)
	c.Flag("cpu.burners", "CPU list to pin the burners to; empty: no pinning.").StringVar(&m.CPUBurners)
	return m
}

func (m *rttMode) check() error {
	switch {
	case m.Probes < 1 || m.Probes > 1_000_000:
		return fmt.Errorf("--probes=%d: want 1..1000000", m.Probes)
	case m.Interval < 100*time.Microsecond || m.Interval > 10*time.Second:
		return fmt.Errorf("--interval=%v: want 100µs..10s", m.Interval)
	case m.ProbeTimeout < time.Millisecond || m.ProbeTimeout > time.Minute:
		return fmt.Errorf("--probe-timeout=%v: want 1ms..1m", m.ProbeTimeout)
	case m.Flows < 1 || m.Flows > 1024:
		return fmt.Errorf("--flows=%d: want 1..1024", m.Flows)
	case m.Burners < 0 || m.Burners > 64:
		return fmt.Errorf("--burners=%d: want 0..64", m.Burners)
	case time.Duration(m.Probes)*m.Interval > 30*time.Minute:
		return fmt.Errorf("--probes x --interval = %v: want at most 30m", time.Duration(m.Probes)*m.Interval)
	}
	return nil
}

func (m *rttMode) validate() error {
	if err := m.check(); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.exporter", m.CPUExporter); err != nil {
		return err
	}
	if err := validCPUFlag("cpu.burners", m.CPUBurners); err != nil {
		return err
	}
	return m.ef.validate()
}

// window is long enough to hold the M probes twice over, so that the run
// ends as soon as M decided probes are in it even if some were skipped.
func (m *rttMode) window() time.Duration {
	w := 2 * time.Duration(m.Probes) * m.Interval
	return max(w.Round(time.Millisecond), time.Second)
}

func (m *rttMode) run(e *env) error {
	r, err := m.startProcesses(e)
	if err != nil {
		return err
	}
	r.printSetup()
	u := probeURL(r.webAddr, "rtt", r.target, false)
	ms := r.startMeters()
	if err := r.startSession(u); err != nil {
		return err
	}
	mfs, err := r.waitWindow(u)
	if err != nil {
		return err
	}
	ms.stop()
	if mfs == nil {
		return fmt.Errorf("no /probe answer within %v", r.maxWait)
	}
	return r.report(mfs, ms, r.windowDebugLine())
}

// config is the exporter's config file: the stamp module "rtt" at
// --interval, whose window holds the M probes twice over.
func (m *rttMode) config() string {
	return fmt.Sprintf(`# written by llama-loadtest rtt
modules:
  rtt:
    prober: stamp
    interval: %s
    timeout: %s
    window: %s
    flows: %d
    ip_protocol: ip4
`, durationMS(m.Interval), durationMS(m.ProbeTimeout), durationMS(m.window()), m.Flows)
}

// rttRun is one run of the rtt mode: the processes it started, where they
// listen, and the client of its requests to /probe.
type rttRun struct {
	m       *rttMode
	e       *env
	target  string // the exporter's own reflector, the module's target
	webAddr string // the exporter's HTTP address
	// maxWait is how long the window may take to hold the M probes: three
	// times their nominal span, plus a timeout and 30 s of start-up.
	maxWait time.Duration
	burners []*child
	exp     *child
	client  *http.Client
}

// startProcesses writes the exporter's config file and starts the burners,
// then the exporter, up to the point where it answers HTTP.
func (m *rttMode) startProcesses(e *env) (*rttRun, error) {
	rport, err := freeUDPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	webPort, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	r := &rttRun{m: m, e: e,
		target:  fmt.Sprintf("127.0.0.1:%d", rport),
		webAddr: fmt.Sprintf("127.0.0.1:%d", webPort),
		maxWait: 3*time.Duration(m.Probes)*m.Interval + m.ProbeTimeout + 30*time.Second,
		client:  &http.Client{Timeout: 30 * time.Second},
	}
	cfgPath := filepath.Join(e.dir, "rtt.yml")
	if err := os.WriteFile(cfgPath, []byte(m.config()), 0o644); err != nil {
		return nil, err
	}
	if err := r.startBurners(); err != nil {
		return nil, err
	}
	if err := r.startExporter(cfgPath); err != nil {
		return nil, err
	}
	return r, nil
}

// startBurners starts the --burners busy loops, each for a minute longer
// than the run can last, so that they compete with the exporter until the
// end.
func (r *rttRun) startBurners() error {
	for i := range r.m.Burners {
		b, err := r.e.sup.start(fmt.Sprintf("burn%d", i), r.m.CPUBurners, selfExe(), "burn", "--for="+(r.maxWait+time.Minute).String())
		if err != nil {
			return err
		}
		r.burners = append(r.burners, b)
	}
	return nil
}

// startExporter starts the exporter with the config file at cfgPath and
// its reflector, unlimited, on the target's port, and waits until it
// answers HTTP.
func (r *rttRun) startExporter(cfgPath string) error {
	exp, err := r.e.sup.start("exporter", r.m.CPUExporter, r.m.ef.argv(
		"--config.file="+cfgPath, "--web.listen-address="+r.webAddr,
		"--reflector.listen-address="+r.target,
		"--reflector.max-pps=0", "--reflector.max-pps-per-source=0")...)
	if err != nil {
		return err
	}
	r.exp = exp
	return waitHTTPReady(r.e.ctx, exp, r.webAddr, 15*time.Second)
}

// printSetup prints the run's "# rtt:" line: what is probed how often, and
// where the processes run.
func (r *rttRun) printSetup() {
	m := r.m
	fmt.Fprintf(r.e.out, "# rtt: %d probes every %v to %s (window %v), %d burners (CPU %s), exporter pid %d on CPU %s, exporter args %q\n",
		m.Probes, m.Interval, r.target, m.window(), m.Burners, orNone(m.CPUBurners), r.exp.PID, orNone(m.CPUExporter), m.ef.Args)
}

// rttMeters measure the CPU used while the window fills: by the exporter,
// by each burner, and by each CPU of the machine.
type rttMeters struct {
	exp     *procmeter.CPUMeter
	burners []*procmeter.CPUMeter
	machine procmeter.MachineMeter
}

// startMeters starts the meters, the exporter's last, just before the
// session starts.
func (r *rttRun) startMeters() *rttMeters {
	exp := r.exp
	ms := &rttMeters{
		exp:     procmeter.NewCPUMeter(func() (time.Duration, error) { return procmeter.ProcessCPU(exp.PID) }),
		burners: make([]*procmeter.CPUMeter, len(r.burners)),
	}
	for i, b := range r.burners {
		ms.burners[i] = procmeter.NewCPUMeter(func() (time.Duration, error) { return procmeter.ProcessCPU(b.PID) })
		ms.burners[i].Start()
	}
	ms.machine.Start()
	ms.exp.Start()
	return ms
}

// stop stops the meters, the exporter's first.
func (ms *rttMeters) stop() {
	ms.exp.Stop()
	ms.machine.Stop()
	for _, b := range ms.burners {
		b.Stop()
	}
}

// burnersPercent is the CPU the burners used together, in percent of one
// core.
func (ms *rttMeters) burnersPercent() float64 {
	var pct float64
	for _, b := range ms.burners {
		pct += b.Percent()
	}
	return pct
}

// startSession asks /probe at u once, which starts the probe session.
func (r *rttRun) startSession(u string) error {
	code, body, err := get(r.e.ctx, r.client, u, 10)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("first /probe: HTTP %d: %s", code, strings.TrimSpace(body))
	}
	return nil
}

// waitWindow asks /probe at u every 250 ms until the window holds M
// probes, and returns its last answer. After maxWait it settles for what
// the window has, with a warning; nil when no answer came by then.
func (r *rttRun) waitWindow(u string) (report.Metrics, error) {
	ctx := r.e.ctx
	logf("session started; waiting for %d decided probes in the window (at most %v)", r.m.Probes, r.maxWait)
	wctx, cancel := context.WithTimeout(ctx, r.maxWait)
	defer cancel()
	var mfs report.Metrics
	lastLog := time.Now()
	for {
		if err := sleepCtx(wctx, 250*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			logf("warning: window holds fewer than %d probes after %v; reporting what it has", r.m.Probes, r.maxWait)
			return mfs, nil
		}
		if r.exp.Exited() {
			return nil, r.exp.exitError()
		}
		var err error
		mfs, _, err = report.Fetch(ctx, r.client, u)
		if err != nil {
			return nil, err
		}
		n := mfs.Get("llama_probe_window_packets_sent")
		if n >= float64(r.m.Probes) {
			return mfs, nil
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("  %.0f probes in the window", n)
			lastLog = time.Now()
		}
	}
}

// windowDebugLine is the "Window RTT:" line of /probe's debug page, or ""
// when the page does not answer or has none.
func (r *rttRun) windowDebugLine() string {
	var line string
	code, body, err := get(r.e.ctx, r.client, probeURL(r.webAddr, "rtt", r.target, true), 10)
	if err != nil || code != http.StatusOK {
		return ""
	}
	for l := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(l, "Window RTT:") {
			line = l
		}
	}
	return line
}

// rttSummary is the summary metric of the window's RTTs.
const rttSummary = "llama_probe_window_rtt_seconds"

// report prints the result line, the debug page's line when there is one,
// and the JSON line. It fails when /probe's answer mfs has no RTT summary.
func (r *rttRun) report(mfs report.Metrics, ms *rttMeters, debugLine string) error {
	count := mfs.SummaryCount(rttSummary)
	r.printResult(mfs, count, ms)
	if debugLine != "" {
		fmt.Fprintf(r.e.out, "rtt debug page: %s\n", debugLine)
	}
	report.JSONLine(r.e.out, r.results(mfs, count, ms))
	if math.IsNaN(count) {
		return fmt.Errorf("the /probe answer has no %s summary", rttSummary)
	}
	return nil
}

// printResult prints the "rtt burners=N:" line: the window's RTT
// quantiles of count probes, and the CPU used while it filled.
func (r *rttRun) printResult(mfs report.Metrics, count float64, ms *rttMeters) {
	q := func(x float64) float64 { return mfs.SummaryQuantile(rttSummary, x) }
	wsent, wlost := mfs.Get("llama_probe_window_packets_sent"), mfs.Get("llama_probe_window_packets_lost")
	ts := mfs.Label("llama_probe_target_info", "timestamps")
	fmt.Fprintf(r.e.out, "rtt burners=%d: %.0f probes (window sent %.0f lost %.0f): min %s p50 %s p90 %s p99 %s p99.9 %s max %s stddev %s jitter %s; timestamps %s; exporter CPU %s, burners CPU %s; machine: %s\n",
		r.m.Burners, count, wsent, wlost,
		report.Seconds(mfs.Get("llama_probe_window_rtt_min_seconds")), report.Seconds(q(0.5)), report.Seconds(q(0.9)), report.Seconds(q(0.99)), report.Seconds(q(0.999)),
		report.Seconds(mfs.Get("llama_probe_window_rtt_max_seconds")), report.Seconds(mfs.Get("llama_probe_window_rtt_stddev_seconds")),
		report.Seconds(mfs.Get("llama_probe_window_jitter_seconds")), orDash(ts), report.Percent(ms.exp.Percent()), report.Percent(ms.burnersPercent()), procmeter.FormatCPUUsage(ms.machine.Usage))
}

// results is the run's JSON line: what printResult prints, in
// microseconds, with the run's settings.
func (r *rttRun) results(mfs report.Metrics, count float64, ms *rttMeters) map[string]any {
	m := r.m
	q := func(x float64) float64 { return mfs.SummaryQuantile(rttSummary, x) }
	wsent, wlost := mfs.Get("llama_probe_window_packets_sent"), mfs.Get("llama_probe_window_packets_lost")
	return map[string]any{
		"mode": "rtt", "burners": m.Burners, "probes": count, "interval_s": m.Interval.Seconds(),
		"window_sent": wsent, "window_lost": wlost, "loss_ratio": ratio(wlost, wsent),
		"rtt_min_us":    report.Micros(mfs.Get("llama_probe_window_rtt_min_seconds")),
		"rtt_p50_us":    report.Micros(q(0.5)),
		"rtt_p90_us":    report.Micros(q(0.9)),
		"rtt_p99_us":    report.Micros(q(0.99)),
		"rtt_p999_us":   report.Micros(q(0.999)),
		"rtt_max_us":    report.Micros(mfs.Get("llama_probe_window_rtt_max_seconds")),
		"rtt_stddev_us": report.Micros(mfs.Get("llama_probe_window_rtt_stddev_seconds")),
		"jitter_us":     report.Micros(mfs.Get("llama_probe_window_jitter_seconds")),
		"timestamps":    mfs.Label("llama_probe_target_info", "timestamps"), "exporter_args": m.ef.Args, "cpu_exporter": m.CPUExporter,
		"exporter_cpu_pct": report.Round2(ms.exp.Percent()), "burners_cpu_pct": report.Round2(ms.burnersPercent()),
		"machine_busy_pct": ms.machine.JSON(),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
