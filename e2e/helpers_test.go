//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	// pollEvery is the pause between two checks of a condition.
	pollEvery = 200 * time.Millisecond
	// startTimeout bounds how long a process may take to start serving.
	startTimeout = 20 * time.Second
	// stopTimeout is how long a process gets to exit after SIGTERM before
	// it is killed.
	stopTimeout = 5 * time.Second
	// logTailLines is how many log lines of each process a failed test shows.
	logTailLines = 40
)

// binDir holds the binary that exporterBinary builds; TestMain creates and
// removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "llama-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// exporterBinary builds llama_exporter from the repository root (the parent
// of this package's directory) once per test binary and returns its path.
func exporterBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			buildErr = err
			return
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			buildErr = fmt.Errorf("repository root %s has no go.mod: %v", root, err)
			return
		}
		// go test puts $GOROOT/bin first in the PATH of the tests.
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is not on PATH: %v", err)
			return
		}
		out := filepath.Join(binDir, "llama_exporter")
		cmd := exec.Command(goTool, "build", "-o", out, ".")
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build in %s: %v\n%s", root, err, msg)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatalf("building llama_exporter: %v", buildErr)
	}
	return buildPath
}

// requireTool returns the path of the named program, or skips or fails the
// test (see skipOrFail) when it is not on PATH.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testlab.SkipOrFail(t, "%s is not on PATH: %v", name, err)
	}
	return p
}

// logBuffer collects a process's output; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the complete lines written so far.
func (b *logBuffer) lines() []string {
	b.mu.Lock()
	s := b.buf.String()
	b.mu.Unlock()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// tail returns the last n lines written, including an unfinished one.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	s := strings.TrimRight(b.buf.String(), "\n")
	b.mu.Unlock()
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = append([]string{fmt.Sprintf("[... %d earlier lines]", len(ls)-n)}, ls[len(ls)-n:]...)
	}
	return strings.Join(ls, "\n")
}

// process is a program started by a test; it is stopped at cleanup.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{} // closed when the process has exited
	err  error         // the result of Wait, once done is closed
}

// startProcess starts argv with its stdout and stderr captured, and
// registers a cleanup that stops it (SIGTERM, then SIGKILL) and, if the test
// failed, logs the tail of its output.
func startProcess(t *testing.T, name string, argv ...string) *process {
	t.Helper()
	p := &process{name: name, log: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	// Should the test binary die without its cleanups, take the process
	// with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s (%s): %v", name, strings.Join(argv, " "), err)
	}
	t.Logf("started %s (pid %d): %s", name, p.cmd.Process.Pid, strings.Join(argv, " "))
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- last %d log lines of %s ---\n%s\n--- end of %s log ---", logTailLines, name, p.log.tail(logTailLines), name)
		}
	})
	return p
}

// stop ends the process, if it still runs, and waits for it.
func (p *process) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopTimeout):
	}
	t.Errorf("%s (pid %d) did not exit within %v of SIGTERM; killing it", p.name, p.cmd.Process.Pid, stopTimeout)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exitErr returns a non-nil error if the process has exited.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited unexpectedly: %v", p.name, p.err)
	default:
		return nil
	}
}

// waitFor calls cond every pollEvery until it returns nil, and fails the test
// with cond's last error when timeout has passed or when one of procs exits.
func waitFor(t *testing.T, timeout time.Duration, what string, procs []*process, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range procs {
			if err := p.exitErr(); err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
		}
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %v", timeout, what, err)
		}
		time.Sleep(pollEvery)
	}
}

// newHTTPClient returns a client that ignores proxy settings and dials with
// dial, or with a plain net.Dialer when dial is nil.
func newHTTPClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{Proxy: nil, DialContext: dial, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches url and returns the body of a 200 response, or an error.
func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// waitHealthy waits until http://addr/-/healthy answers 200.
func waitHealthy(t *testing.T, c *http.Client, addr string, procs ...*process) {
	t.Helper()
	url := "http://" + addr + "/-/healthy"
	waitFor(t, startTimeout, url+" to answer 200", procs, func() error {
		_, err := get(c, url)
		return err
	})
}

// exporter is a running llama_exporter.
type exporter struct {
	proc *process
	// web is the host:port of the HTTP server.
	web string
	// reflectors are the reflector's host:port addresses, as it logged them.
	reflectors []string
}

// startLocalExporter runs llama_exporter in the test's network namespace
// with args, logging JSON at debug level; args should name port 0 for the
// web server and the reflector, so that the OS picks free ports, which
// startLocalExporter reads from the log. wantReflectors is the number of
// reflector addresses to wait for (0 with --no-reflector). It returns once
// /-/healthy answers.
func startLocalExporter(t *testing.T, wantReflectors int, args ...string) *exporter {
	t.Helper()
	argv := append([]string{exporterBinary(t), "--log.level=debug", "--log.format=json"}, args...)
	e := &exporter{proc: startProcess(t, "llama_exporter", argv...)}
	waitFor(t, startTimeout, `llama_exporter to log its addresses ("Listening on" and "reflector listening")`, []*process{e.proc}, func() error {
		e.web, e.reflectors = "", nil
		for _, line := range e.proc.log.lines() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "Listening on":
				if s, ok := rec["address"].(string); ok && e.web == "" {
					e.web = s
				}
			case "reflector listening":
				if s, ok := rec["addresses"].(string); ok {
					e.reflectors = strings.Fields(strings.Trim(s, "[]"))
				}
			}
		}
		if e.web == "" || len(e.reflectors) < wantReflectors {
			return fmt.Errorf("web address %q, reflector addresses %q (want %d)", e.web, e.reflectors, wantReflectors)
		}
		return nil
	})
	waitHealthy(t, newHTTPClient(nil), e.web, e.proc)
	return e
}

// sample is one sample of an exposition: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// parseExposition parses the Prometheus text format and returns the samples
// of counters, gauges and untyped metrics by metric name; summaries and
// histograms get their _sum and _count samples.
func parseExposition(body []byte) (map[string][]sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %v\n%s", err, body)
	}
	out := make(map[string][]sample)
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string)
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				out[name] = append(out[name], sample{labels, m.GetCounter().GetValue()})
			case m.Gauge != nil:
				out[name] = append(out[name], sample{labels, m.GetGauge().GetValue()})
			case m.Untyped != nil:
				out[name] = append(out[name], sample{labels, m.GetUntyped().GetValue()})
			case m.Summary != nil:
				out[name+"_sum"] = append(out[name+"_sum"], sample{labels, m.GetSummary().GetSampleSum()})
				out[name+"_count"] = append(out[name+"_count"], sample{labels, float64(m.GetSummary().GetSampleCount())})
			case m.Histogram != nil:
				out[name+"_sum"] = append(out[name+"_sum"], sample{labels, m.GetHistogram().GetSampleSum()})
				out[name+"_count"] = append(out[name+"_count"], sample{labels, float64(m.GetHistogram().GetSampleCount())})
			}
		}
	}
	return out, nil
}

// single returns the value of the metric name, which must have exactly one
// sample.
func single(samples map[string][]sample, name string) (float64, error) {
	s := samples[name]
	switch len(s) {
	case 0:
		return math.NaN(), fmt.Errorf("metric %s is missing", name)
	case 1:
		return s[0].value, nil
	default:
		return math.NaN(), fmt.Errorf("metric %s has %d samples, want 1", name, len(s))
	}
}

// sum returns the sum of the samples of the metric name, which must have
// at least one.
func sum(samples map[string][]sample, name string) (float64, error) {
	s := samples[name]
	if len(s) == 0 {
		return math.NaN(), fmt.Errorf("metric %s is missing", name)
	}
	var v float64
	for _, x := range s {
		v += x.value
	}
	return v, nil
}

// scrape fetches url and parses its metrics.
func scrape(c *http.Client, url string) (map[string][]sample, []byte, error) {
	body, err := get(c, url)
	if err != nil {
		return nil, body, err
	}
	s, err := parseExposition(body)
	return s, body, err
}
