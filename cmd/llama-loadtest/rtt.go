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
	ctx := e.ctx
	rport, err := freeUDPPort("127.0.0.1")
	if err != nil {
		return err
	}
	webPort, err := freeTCPPort()
	if err != nil {
		return err
	}
	webAddr := fmt.Sprintf("127.0.0.1:%d", webPort)
	cfgPath := filepath.Join(e.dir, "rtt.yml")
	cfg := fmt.Sprintf(`# written by llama-loadtest rtt
modules:
  rtt:
    prober: stamp
    interval: %s
    timeout: %s
    window: %s
    flows: %d
    ip_protocol: ip4
`, durationMS(m.Interval), durationMS(m.ProbeTimeout), durationMS(m.window()), m.Flows)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	maxWait := 3*time.Duration(m.Probes)*m.Interval + m.ProbeTimeout + 30*time.Second

	var burners []*child
	for i := range m.Burners {
		b, err := e.sup.start(fmt.Sprintf("burn%d", i), m.CPUBurners, selfExe(), "burn", "--for="+(maxWait+time.Minute).String())
		if err != nil {
			return err
		}
		burners = append(burners, b)
	}
	exp, err := e.sup.start("exporter", m.CPUExporter, m.ef.argv(
		"--config.file="+cfgPath, "--web.listen-address="+webAddr,
		fmt.Sprintf("--reflector.listen-address=127.0.0.1:%d", rport),
		"--reflector.max-pps=0", "--reflector.max-pps-per-source=0")...)
	if err != nil {
		return err
	}
	if err := waitHTTPReady(ctx, exp, webAddr, 15*time.Second); err != nil {
		return err
	}
	target := fmt.Sprintf("127.0.0.1:%d", rport)
	fmt.Fprintf(e.out, "# rtt: %d probes every %v to %s (window %v), %d burners (CPU %s), exporter pid %d on CPU %s, exporter args %q\n",
		m.Probes, m.Interval, target, m.window(), m.Burners, orNone(m.CPUBurners), exp.PID, orNone(m.CPUExporter), m.ef.Args)

	client := &http.Client{Timeout: 30 * time.Second}
	u := probeURL(webAddr, "rtt", target, false)
	expMeter := newCPUMeter(func() (time.Duration, error) { return processCPU(exp.PID) })
	burnMeters := make([]*cpuMeter, len(burners))
	for i, b := range burners {
		burnMeters[i] = newCPUMeter(func() (time.Duration, error) { return processCPU(b.PID) })
		burnMeters[i].start()
	}
	var machine machineMeter
	machine.start()
	expMeter.start()
	code, body, err := get(ctx, client, u, 10)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("first /probe: HTTP %d: %s", code, strings.TrimSpace(body))
	}
	logf("session started; waiting for %d decided probes in the window (at most %v)", m.Probes, maxWait)
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	var mfs metricFamilies
	lastLog := time.Now()
	for {
		if err := sleepCtx(wctx, 250*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return err
			}
			logf("warning: window holds fewer than %d probes after %v; reporting what it has", m.Probes, maxWait)
			break
		}
		if exp.Exited() {
			return exp.exitError()
		}
		mfs, _, err = fetchMetrics(ctx, client, u)
		if err != nil {
			return err
		}
		n := mfs.get("llama_probe_window_packets_sent")
		if n >= float64(m.Probes) {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("  %.0f probes in the window", n)
			lastLog = time.Now()
		}
	}
	expMeter.stop()
	machine.stop()
	for _, b := range burnMeters {
		b.stop()
	}
	if mfs == nil {
		return fmt.Errorf("no /probe answer within %v", maxWait)
	}
	var debugLine string
	if code, body, err := get(ctx, client, probeURL(webAddr, "rtt", target, true), 10); err == nil && code == http.StatusOK {
		for line := range strings.SplitSeq(body, "\n") {
			if strings.HasPrefix(line, "Window RTT:") {
				debugLine = line
			}
		}
	}
	var burnPct float64
	for _, b := range burnMeters {
		burnPct += b.Percent()
	}

	const name = "llama_probe_window_rtt_seconds"
	q := func(x float64) float64 { return mfs.summaryQuantile(name, x) }
	count := mfs.summaryCount(name)
	wsent, wlost := mfs.get("llama_probe_window_packets_sent"), mfs.get("llama_probe_window_packets_lost")
	ts := mfs.label("llama_probe_target_info", "timestamps")
	fmt.Fprintf(e.out, "rtt burners=%d: %.0f probes (window sent %.0f lost %.0f): min %s p50 %s p90 %s p99 %s p99.9 %s max %s stddev %s jitter %s; timestamps %s; exporter CPU %s, burners CPU %s; machine: %s\n",
		m.Burners, count, wsent, wlost,
		fmtSeconds(mfs.get("llama_probe_window_rtt_min_seconds")), fmtSeconds(q(0.5)), fmtSeconds(q(0.9)), fmtSeconds(q(0.99)), fmtSeconds(q(0.999)),
		fmtSeconds(mfs.get("llama_probe_window_rtt_max_seconds")), fmtSeconds(mfs.get("llama_probe_window_rtt_stddev_seconds")),
		fmtSeconds(mfs.get("llama_probe_window_jitter_seconds")), orDash(ts), fmtPct(expMeter.Percent()), fmtPct(burnPct), fmtCPUUsage(machine.Usage))
	if debugLine != "" {
		fmt.Fprintf(e.out, "rtt debug page: %s\n", debugLine)
	}
	jsonLine(e.out, map[string]any{
		"mode": "rtt", "burners": m.Burners, "probes": count, "interval_s": m.Interval.Seconds(),
		"window_sent": wsent, "window_lost": wlost, "loss_ratio": ratio(wlost, wsent),
		"rtt_min_us":    micros(mfs.get("llama_probe_window_rtt_min_seconds")),
		"rtt_p50_us":    micros(q(0.5)),
		"rtt_p90_us":    micros(q(0.9)),
		"rtt_p99_us":    micros(q(0.99)),
		"rtt_p999_us":   micros(q(0.999)),
		"rtt_max_us":    micros(mfs.get("llama_probe_window_rtt_max_seconds")),
		"rtt_stddev_us": micros(mfs.get("llama_probe_window_rtt_stddev_seconds")),
		"jitter_us":     micros(mfs.get("llama_probe_window_jitter_seconds")),
		"timestamps":    ts, "exporter_args": m.ef.Args, "cpu_exporter": m.CPUExporter,
		"exporter_cpu_pct": round2(expMeter.Percent()), "burners_cpu_pct": round2(burnPct),
		"machine_busy_pct": machine.JSON(),
	})
	if math.IsNaN(count) {
		return fmt.Errorf("the /probe answer has no %s summary", name)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
