package main

import (
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// The README shows examples/prometheus.yml verbatim, and the e2e tests run
// Prometheus with that file: keep the two in step.
func TestREADMEShowsPrometheusConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile("examples/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+string(cfg)+"```") {
		t.Fatal("README.md does not contain examples/prometheus.yml verbatim")
	}
}

func TestExampleConfigIsValidAndComplete(t *testing.T) {
	c, err := config.Load("example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Modules["default"]; d == nil || !d.Equal(config.Default().Modules["default"]) {
		t.Fatal("example.yml's default module differs from the built-in defaults")
	}
}

func TestConfigCheckExitCodes(t *testing.T) {
	bad := t.TempDir() + "/bad.yml"
	if err := os.WriteFile(bad, []byte("modules:\n  x:\n    flows: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--config.check"}, 0},
		{[]string{"--config.file=example.yml", "--config.check"}, 0},
		{[]string{"--config.file=" + bad, "--config.check"}, 1},
		{[]string{"--no-such-flag"}, 2},
	} {
		if got := run(tc.args, os.Stderr); got != tc.code {
			t.Errorf("llama_exporter %v exited %d, want %d", tc.args, got, tc.code)
		}
	}
}

// TestSIGTERMStopsEverything starts the exporter in-process with a session
// probing its own reflector, sends SIGTERM, and checks that run returns
// within a second and leaves no goroutine behind.
func TestSIGTERMStopsEverything(t *testing.T) {
	// os/signal starts its own reader goroutine once per process; start
	// it before counting.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	signal.Stop(c)
	before := runtime.NumGoroutine()
	web, refl := testlab.FreeTCP(t), testlab.FreeUDP(t)
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--web.listen-address=" + web, "--reflector.listen-address=" + refl, "--log.level=error"}, os.Stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + web + "/probe?target=" + refl)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "probe_success 1") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter never answered a probe: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	http.DefaultClient.CloseIdleConnections()
	start := time.Now()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 || time.Since(start) > time.Second {
			t.Fatalf("exit %d after %v; want 0 within 1s", code, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadKeepsOldConfigAndSessions reloads through POST /-/reload: a bad
// file answers 500 and keeps the running config; a good one that changes
// another module keeps the probed module's session and its counters.
func TestReloadKeepsOldConfigAndSessions(t *testing.T) {
	web, refl := testlab.FreeTCP(t), testlab.FreeUDP(t)
	cfg := t.TempDir() + "/config.yml"
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("modules:\n  kept:\n    interval: 10ms\n  other:\n    interval: 1s\n")
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--web.listen-address=" + web, "--reflector.listen-address=" + refl,
			"--config.file=" + cfg, "--log.level=error"}, os.Stderr)
	}()
	t.Cleanup(func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-done
	})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + web + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	reload := func() (int, string) {
		resp, err := http.Post("http://"+web+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	sent := func() float64 {
		_, body := get("/probe?module=kept&target=" + refl)
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "llama_probe_packets_sent_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	deadline := time.Now().Add(10 * time.Second)
	for sent() < 50 {
		if time.Now().After(deadline) {
			t.Fatal("the session never reached 50 probes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	write("modules:\n  kept:\n    flows: 0\n")
	if code, body := reload(); code != 500 || !strings.Contains(body, "modules.kept.flows: must be at least 1") {
		t.Fatalf("bad reload: %d %q", code, body)
	}
	if _, body := get("/config"); !strings.Contains(body, "other:") {
		t.Fatalf("config after a failed reload:\n%s", body)
	}
	before := sent()
	write("modules:\n  kept:\n    interval: 10ms\n  other:\n    interval: 2s\n")
	if code, body := reload(); code != 200 {
		t.Fatalf("good reload: %d %q", code, body)
	}
	if after := sent(); after < before {
		t.Fatalf("sent_total went from %v to %v across a reload: the session was restarted", before, after)
	}
	if code, _ := get("/-/reload"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /-/reload: %d, want 405", code)
	}
}
