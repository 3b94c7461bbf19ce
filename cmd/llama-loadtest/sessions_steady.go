//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

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
	expMetrics          report.Metrics
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
	reflMetrics0, _, err := report.Fetch(ctx, r.client, "http://"+r.reflWeb+"/metrics")
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
func (r *sessionsRun) readAfter(s *steadyState, reflMetrics0 report.Metrics) error {
	ctx := r.e.ctx
	reflMetrics1, _, err := report.Fetch(ctx, r.client, "http://"+r.reflWeb+"/metrics")
	if err != nil {
		return err
	}
	s.memEnd, _ = procmeter.ProcessMem(r.exp.PID)
	st, _ := procmeter.ReadStat(fmt.Sprintf("/proc/%d/stat", r.exp.PID))
	s.threads = st.Threads
	if s.expMetrics, _, err = report.Fetch(ctx, r.client, "http://"+r.webAddr+"/metrics"); err != nil {
		return err
	}
	s.reflPPS = (reflMetrics1.Get("llama_reflector_packets_reflected_total") - reflMetrics0.Get("llama_reflector_packets_reflected_total")) / s.elapsed.Seconds()
	s.throttled = reflMetrics1.Get("llama_reflector_packets_throttled_total")
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
		m.Sessions, s.elapsed.Seconds(), s.exp.CPU.Seconds(), report.Percent(s.exp.Percent()),
		1e6*s.exp.CPU.Seconds()/(m.expectedPPS()*s.elapsed.Seconds()), report.Percent(s.refl.Percent()), s.reflPPS, m.expectedReflected(), s.throttled)
	fmt.Fprintf(out, "sessions receive-buffer drops over the period: exporter sockets %d, reflector sockets %d; machine: %s\n",
		s.expDrops, s.reflDrops, procmeter.FormatCPUUsage(s.machine.Usage))
	fmt.Fprintf(out, "sessions exporter memory: RSS %s (%.1f KiB per session over idle), peak %s, threads %d\n",
		report.Bytes(s.memEnd.RSS), (float64(s.memEnd.RSS)-float64(idle.RSS))/1024/float64(m.Sessions), report.Bytes(s.memEnd.HWM), s.threads)
	fmt.Fprintf(out, "sessions /probe latency over %d scrapes (%d started, %d errors, %d skipped with all %d workers busy): p50 %s p90 %s p99 %s max %s\n",
		len(s.scr.d), s.issued, s.scr.errs, s.skipped, m.ScrapeConcurrency, report.Seconds(sp50), report.Seconds(sp90), report.Seconds(sp99), report.Seconds(smax))
	if s.scr.err != nil {
		logf("first scrape error: %v", s.scr.err)
	}
	if base != nil {
		toBaseline = ratio(s.exp.CPU.Seconds()/s.elapsed.Seconds(), base.cpu.CPU.Seconds()/base.cpu.Wall.Seconds())
		fmt.Fprintf(out, "sessions exporter CPU / baseline CPU: %.2f\n", toBaseline)
	}
	return toBaseline
}

// results is the measured period's part of the run's JSON line.
func (s *steadyState) results(m *sessionsMode, idle procmeter.Mem) map[string]any {
	sp50, sp90, sp99, smax := s.scr.stats()
	return map[string]any{
		"duration_s":                report.Round2(s.elapsed.Seconds()),
		"exporter_cpu_s":            report.Round2(s.exp.CPU.Seconds()),
		"exporter_cpu_pct":          report.Round2(s.exp.Percent()),
		"exporter_cpu_us_per_probe": report.Round2(1e6 * s.exp.CPU.Seconds() / (m.expectedPPS() * s.elapsed.Seconds())),
		"reflector_cpu_pct":         report.Round2(s.refl.Percent()),
		"exporter_rss_mib":          report.Round2(float64(s.memEnd.RSS) / (1 << 20)),
		"exporter_rss_idle_mib":     report.Round2(float64(idle.RSS) / (1 << 20)),
		"exporter_rss_peak_mib":     report.Round2(float64(s.memEnd.HWM) / (1 << 20)),
		"exporter_threads":          s.threads,
		"expected_pps":              math.Round(m.expectedPPS()),
		"reflected_pps":             math.Round(s.reflPPS),
		"reflector_throttled":       s.throttled,
		"send_errors":               s.expMetrics.Get("llama_exporter_send_errors_total"),
		"replies_unmatched":         s.expMetrics.Get("llama_exporter_replies_unmatched_total"),
		"exporter_socket_drops":     s.expDrops,
		"reflector_socket_drops":    s.reflDrops,
		"machine_busy_pct":          s.machine.JSON(),
		"scrapes":                   len(s.scr.d),
		"scrapes_started":           s.issued,
		"scrape_errors":             s.scr.errs,
		"probe_latency_p50_ms":      report.Round2(sp50 * 1e3),
		"probe_latency_p90_ms":      report.Round2(sp90 * 1e3),
		"probe_latency_p99_ms":      report.Round2(sp99 * 1e3),
		"probe_latency_max_ms":      report.Round2(smax * 1e3),
	}
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
	q := report.DurationQuantiles(l.d, 0.5, 0.9, 0.99, 1)
	return q[0.5], q[0.9], q[0.99], q[1]
}
