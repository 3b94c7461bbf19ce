//go:build linux

package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// alertmanager returns the path of Debian's Alertmanager binary, or skips
// or fails the test.
func alertmanager(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testlab.SkipOrFail(t, "Alertmanager is not on PATH (Debian: apt-get install prometheus-alertmanager)")
	return ""
}

// TestAlertmanagerConfig checks the shipped Alertmanager configuration with
// amtool.
func TestAlertmanagerConfig(t *testing.T) {
	amtool, err := exec.LookPath("amtool")
	if err != nil {
		testlab.SkipOrFail(t, "amtool is not on PATH (Debian: apt-get install prometheus-alertmanager): %v", err)
	}
	path := filepath.Join(repoRoot(t), "deploy", "alertmanager", "alertmanager.yml")
	if out, err := exec.Command(amtool, "check-config", path).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
}

// amAlert is an alert as Alertmanager's v2 API takes and returns it.
type amAlert struct {
	Labels map[string]string `json:"labels"`
	Status struct {
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status,omitzero"`
}

// A real Alertmanager with the shipped configuration inhibits exactly the
// per-pair alerts that a fleet alert explains: those of the pairs a culprit
// link explains (both ways) and those to or from an unreachable host, and
// no other pair's.
func TestAlertmanagerInhibitsExplainedPairs(t *testing.T) {
	am := alertmanager(t)
	addr := freeLocalAddr(t)
	cmd := exec.Command(am, "--config.file="+filepath.Join(repoRoot(t), "deploy", "alertmanager", "alertmanager.yml"),
		"--storage.path="+t.TempDir(), "--web.listen-address="+addr, "--cluster.listen-address=")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("Alertmanager's log:\n%s", logs.String())
		}
	})
	api := "http://" + addr + "/api/v2/alerts"
	pair := func(name, src, dst string) map[string]string {
		return map[string]string{"alertname": name, "source": src, "destination": dst, "job": "llama"}
	}
	fleet := []map[string]string{
		{"alertname": "LlamaLinkLoss", "to": "198.18.100.3", "link": "spine1:eth2 -> leaf2:eth0"},
		{"alertname": "LlamaLossExplained", "source": "h1", "destination": "h4", "to": "198.18.100.3"},
		{"alertname": "LlamaHostUnreachable", "host": "h9", "source": "h9", "destination": "h9"},
		{"alertname": "LlamaHostExplained", "host": "h8", "source": "h8", "destination": "h8"},
		{"alertname": "LlamaLossOnHost", "source": "h6", "destination": "h7", "host": "h7", "side": "destination", "reason": "netfilter_drop"},
	}
	want := []struct {
		name, src, dst string
		inhibited      bool
	}{
		{"LlamaPacketLoss", "h1", "h4", true},
		{"LlamaSuspectLink", "h1", "h4", true},
		{"LlamaPacketLoss", "h4", "h1", false}, // not marked: only what the rules mark is inhibited
		{"LlamaTargetUnreachable", "h2", "h9", true},
		{"LlamaPacketLoss", "h9", "h3", true},
		{"LlamaPacketLoss", "h2", "h5", false},
		{"LlamaSuspectLink", "h2", "h8", true},        // the host's alert cleared, its mark not yet
		{"LlamaPacketLoss", "h6", "h7", true},         // the host's drops explain it
		{"LlamaPacketLoss", "h7", "h6", false},        // the other direction is another pair
		{"LlamaTargetUnreachable", "h6", "h7", false}, // only the loss alert is explained
	}
	alerts := fleet
	for _, w := range want {
		alerts = append(alerts, pair(w.name, w.src, w.dst))
	}
	waitUntil(t, 20*time.Second, "Alertmanager takes the alerts", exited, func() error {
		return postAlerts(api, alerts)
	})
	waitUntil(t, 20*time.Second, "the explained pairs' alerts inhibited, and no other", exited, func() error {
		got, err := getAlerts(api)
		if err != nil {
			return err
		}
		for _, w := range want {
			key := w.name + " " + w.src + "->" + w.dst
			a, ok := got[key]
			if !ok {
				return fmt.Errorf("%s not listed", key)
			}
			if (len(a.Status.InhibitedBy) > 0) != w.inhibited {
				return fmt.Errorf("%s: inhibited by %v, want inhibited %v", key, a.Status.InhibitedBy, w.inhibited)
			}
		}
		return nil
	})
}

func postAlerts(api string, alerts []map[string]string) error {
	var body []amAlert
	for _, l := range alerts {
		body = append(body, amAlert{Labels: l})
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	resp, err := http.Post(api, "application/json", bytes.NewReader(data))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", api, resp.Status)
	}
	return nil
}

// getAlerts returns the per-pair alerts Alertmanager holds, keyed
// "NAME SRC->DST".
func getAlerts(api string) (map[string]amAlert, error) {
	resp, err := http.Get(api)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	out := map[string]amAlert{}
	for _, a := range list {
		out[a.Labels["alertname"]+" "+a.Labels["source"]+"->"+a.Labels["destination"]] = a
	}
	return out, nil
}

// freeLocalAddr returns a loopback address with a TCP port free now.
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
