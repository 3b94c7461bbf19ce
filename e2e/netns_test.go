//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab/netns"
)

// TestTwoHostsNetns runs two exporters on two "hosts", network namespaces A
// and B joined by a veth pair: B reflects, A probes B with a fast module, and
// on a clean link no probe may be lost.
func TestTwoHostsNetns(t *testing.T) {
	netns.Require(t)
	a, b := netns.New(t), netns.New(t)
	netns.Link(t, a, "198.18.0.1/30", b, "198.18.0.2/30")

	cfgFile := filepath.Join(t.TempDir(), "llama.yml")
	cfg := "modules:\n  fast:\n    interval: 10ms\n    timeout: 1s\n    window: 30s\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := exporterBinary(t)
	const (
		webA = "198.18.0.1:5200"
		webB = "198.18.0.2:5201"
	)
	procB := startProcess(t, "llama_exporter in B (reflector)", "ip", "netns", "exec", b.Name, bin,
		"--log.level=debug", "--web.listen-address="+webB, "--reflector.listen-address=198.18.0.2:862")
	procA := startProcess(t, "llama_exporter in A (prober)", "ip", "netns", "exec", a.Name, bin,
		"--log.level=debug", "--no-reflector", "--web.listen-address="+webA, "--config.file="+cfgFile)
	procs := []*process{procA, procB}
	clientA := newHTTPClient(a.DialContext())
	clientB := newHTTPClient(b.DialContext())
	// B's reflector is bound before B's HTTP server starts.
	waitHealthy(t, clientB, webB, procs...)
	waitHealthy(t, clientA, webA, procs...)

	probeURL := "http://" + webA + "/probe?target=198.18.0.2&module=fast"
	var last map[string][]sample
	waitFor(t, 60*time.Second, "llama_probe_window_packets_sent >= 200", procs, func() error {
		s, _, err := scrape(clientA, probeURL)
		if err != nil {
			return err
		}
		sent, err := single(s, "llama_probe_window_packets_sent")
		if err != nil {
			return err
		}
		if sent < 200 {
			return fmt.Errorf("llama_probe_window_packets_sent = %v", sent)
		}
		last = s
		return nil
	})

	for _, want := range []struct {
		name  string
		value float64
	}{
		{"llama_probe_packets_lost_total", 0},
		{"llama_probe_window_loss_ratio", 0},
		{"llama_probe_window_packets_lost", 0},
		{"probe_success", 1},
	} {
		got, err := single(last, want.name)
		if err != nil {
			t.Error(err)
		} else if got != want.value {
			t.Errorf("%s = %v, want %v", want.name, got, want.value)
		}
	}
	sentTotal, err := single(last, "llama_probe_packets_sent_total")
	if err != nil {
		t.Fatal(err)
	}
	receivedTotal, err := single(last, "llama_probe_packets_received_total")
	if err != nil {
		t.Fatal(err)
	}
	if receivedTotal < 200 || receivedTotal > sentTotal {
		t.Errorf("llama_probe_packets_received_total = %v, want 200 <= received <= sent (%v)", receivedTotal, sentTotal)
	}
	t.Logf("A -> B: sent_total=%v received_total=%v", sentTotal, receivedTotal)

	// B's reflector saw A's probes.
	sB, _, err := scrape(clientB, "http://"+webB+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	reflected, err := sum(sB, "llama_reflector_packets_reflected_total")
	if err != nil {
		t.Fatal(err)
	}
	if reflected < receivedTotal {
		t.Errorf("B's llama_reflector_packets_reflected_total = %v, want at least A's received_total %v", reflected, receivedTotal)
	}
}
