//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

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
		sw.wsent, sw.wlost, 100*ratio(sw.wlost, sw.wsent), sw.down, report.Seconds(sw.p50Median), report.Seconds(sw.p99Max))
	maps.Copy(res, map[string]any{
		"sum_sent": sw.sent, "sum_received": sw.received, "sum_lost": sw.lost, "loss_ratio": ratio(sw.lost, sw.sent),
		"sum_late": sw.late, "sum_duplicated": sw.dup, "sum_reordered": sw.reordered,
		"window_sent": sw.wsent, "window_lost": sw.wlost, "window_loss_ratio": ratio(sw.wlost, sw.wsent),
		"targets_down": sw.down, "sweep_errors": sw.errs, "window_rtt_p50_median_us": report.Micros(sw.p50Median), "window_rtt_p99_max_us": report.Micros(sw.p99Max),
	})
	return nil
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
		mfs, _, err := report.Fetch(ctx, client, probeURL(webAddr, sessionsModule, m.target(i, port), false))
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
func (s *sweepSum) add(mfs report.Metrics, err error) {
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
	res.sent += mfs.Get("llama_probe_packets_sent_total")
	res.received += mfs.Get("llama_probe_packets_received_total")
	res.lost += mfs.Get("llama_probe_packets_lost_total")
	res.late += mfs.Get("llama_probe_packets_late_total")
	res.dup += mfs.Get("llama_probe_packets_duplicated_total")
	res.reordered += mfs.Get("llama_probe_packets_reordered_total")
	res.wsent += mfs.Get("llama_probe_window_packets_sent")
	res.wlost += mfs.Get("llama_probe_window_packets_lost")
	if mfs.Get("probe_success") != 1 {
		res.down++
	}
	if v := mfs.SummaryQuantile("llama_probe_window_rtt_seconds", 0.5); !math.IsNaN(v) {
		s.p50s = append(s.p50s, v)
	}
	if v := mfs.SummaryQuantile("llama_probe_window_rtt_seconds", 0.99); !math.IsNaN(v) {
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
	s.res.p50Median = report.Quantile(s.p50s, 0.5)
	s.res.p99Max = report.Quantile(s.p99s, 1)
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
		base.cpu.CPU.Seconds(), report.Percent(base.cpu.Percent()), base.usPerProbe, base.sent, base.received,
		100*ratio(float64(base.sent-min(base.sent, base.received)), float64(base.sent)), report.Seconds(base.meanRTT.Seconds()))
	return base, nil
}
