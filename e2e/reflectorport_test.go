//go:build linux

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSecondExporterRefusesReflectorPort starts the real binary twice on
// one reflector port, with several reflector sockets each (SO_REUSEPORT
// among them): the second must exit with one line that names the port and
// says another process holds it, instead of sharing the port's flows with
// the first. The first keeps answering.
func TestSecondExporterRefusesReflectorPort(t *testing.T) {
	first := startLocalExporter(t, 1,
		"--web.listen-address=127.0.0.1:0",
		"--reflector.listen-address=127.0.0.1:0",
		"--reflector.sockets=4",
	)
	refl := first.reflectors[0]
	port := refl[strings.LastIndexByte(refl, ':')+1:]
	for _, listen := range []string{refl, ":" + port} {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		out, err := exec.CommandContext(ctx, exporterBinary(t),
			"--web.listen-address=127.0.0.1:0", "--reflector.listen-address="+listen, "--reflector.sockets=4").CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("second exporter on %s still running after %v:\n%s", listen, startTimeout, out)
		}
		if err == nil {
			t.Fatalf("second exporter on %s exited 0:\n%s", listen, out)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "UDP port "+port+" is held by another process") {
				lines = append(lines, l)
			}
			if strings.Contains(l, "reflector listening") {
				t.Errorf("second exporter on %s logged %q", listen, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("second exporter on %s: want one line saying UDP port %s is held by another process; output:\n%s", listen, port, out)
		}
		t.Logf("second exporter on %s: %s", listen, lines)
	}
	c := newHTTPClient(nil)
	waitFor(t, 10*time.Second, "the first exporter to answer a probe of its reflector", []*process{first.proc}, func() error {
		body, err := get(c, "http://"+first.web+"/probe?target="+refl)
		if err == nil && !strings.Contains(string(body), "probe_success 1") {
			return errString("probe_success is not 1 yet")
		}
		return err
	})
}

type errString string

func (e errString) Error() string { return string(e) }
