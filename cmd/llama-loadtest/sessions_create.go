//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/procmeter"
	"github.com/llama-exporter/llama_exporter/cmd/llama-loadtest/internal/report"
)

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
	metrics, _, err := report.Fetch(ctx, r.client, "http://"+r.webAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	c.gauge = metrics.Get("llama_exporter_sessions")
	mem, _ := procmeter.ProcessMem(r.exp.PID)
	fmt.Fprintf(r.e.out, "sessions created: %d of %d in %.1fs (%.0f/s); first /probe p50 %s p99 %s max %s; non-200 %d, errors %d; probe_success=1 on first scrape %d; llama_exporter_sessions %.0f; exporter RSS %s\n",
		res.ok, m.Sessions, c.took.Seconds(), float64(res.ok)/c.took.Seconds(),
		report.Seconds(c.p50), report.Seconds(c.p99), report.Seconds(maxv), res.non200, res.lat.errs, res.success, c.gauge, report.Bytes(mem.RSS))
	if res.ok < m.Sessions {
		logf("warning: only %d of %d sessions created (first error: %v)", res.ok, m.Sessions, res.firstErr)
	}
	return c, nil
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
		if v, ok := report.SampleValue(body, "probe_success"); ok && v == 1 {
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
