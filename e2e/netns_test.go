//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTwoHostsNetns runs two exporters on two "hosts", network namespaces A
// and B joined by a veth pair: B reflects, A probes B with a fast module, and
// on a clean link no probe may be lost.
func TestTwoHostsNetns(t *testing.T) {
	ipCmd := requireNetns(t)
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	nsA := newNetns(t, ipCmd, "llama-e2e-a-"+suffix)
	nsB := newNetns(t, ipCmd, "llama-e2e-b-"+suffix)
	vethA, vethB := "le2e"+suffix[:6]+"a", "le2e"+suffix[:6]+"b"
	runIP(t, ipCmd, "link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	runIP(t, ipCmd, "-n", nsA, "addr", "add", "198.18.0.1/30", "dev", vethA)
	runIP(t, ipCmd, "-n", nsB, "addr", "add", "198.18.0.2/30", "dev", vethB)
	runIP(t, ipCmd, "-n", nsA, "link", "set", vethA, "up")
	runIP(t, ipCmd, "-n", nsB, "link", "set", vethB, "up")

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
	procB := startProcess(t, "llama_exporter in B (reflector)", ipCmd, "netns", "exec", nsB, bin,
		"--log.level=debug", "--web.listen-address="+webB, "--reflector.listen-address=198.18.0.2:862")
	procA := startProcess(t, "llama_exporter in A (prober)", ipCmd, "netns", "exec", nsA, bin,
		"--log.level=debug", "--no-reflector", "--web.listen-address="+webA, "--config.file="+cfgFile)
	procs := []*process{procA, procB}
	clientA := newHTTPClient(netnsDialer(nsA))
	clientB := newHTTPClient(netnsDialer(nsB))
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

// requireNetns returns the path of the ip command, or skips or fails the
// test (see skipOrFail) when the test is not root or ip is missing.
func requireNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "network namespace tests need root")
	}
	return requireTool(t, "ip")
}

// newNetns creates the network namespace name, deleted at cleanup, and brings
// its loopback interface up.
func newNetns(t *testing.T, ipCmd, name string) string {
	t.Helper()
	if out, err := exec.Command(ipCmd, "netns", "add", name).CombinedOutput(); err != nil {
		skipOrFail(t, "cannot create network namespaces: ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ipCmd, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
		}
	})
	runIP(t, ipCmd, "-n", name, "link", "set", "lo", "up")
	return name
}

// runIP runs the ip command with args and fails the test if it fails.
func runIP(t *testing.T, ipCmd string, args ...string) {
	t.Helper()
	if out, err := exec.Command(ipCmd, args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// netnsDialer returns a DialContext function whose sockets are created in
// the named network namespace. addr must hold a literal IP address: then
// net.Dialer creates the socket on the calling goroutine, which inNetns has
// locked to a thread in the namespace.
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("netns dialer: %q is not an IP address", host)
		}
		var conn net.Conn
		err = inNetns(ns, func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// inNetns runs f on the calling goroutine, locked to an OS thread that has
// joined the named network namespace, then returns the thread to its
// original namespace. If that fails, the thread stays locked, so that the Go
// runtime discards it when the goroutine exits.
func inNetns(ns string, f func() error) (err error) {
	path := "/run/netns/" + ns
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	orig, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening %s: %w", self, err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("joining network namespace %s: %w", ns, err)
	}
	defer func() {
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			err = errors.Join(err, fmt.Errorf("returning from network namespace %s: %w (the thread stays locked and is discarded)", ns, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return f()
}
