package main

import (
	"os"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/config"
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
		if got := run(tc.args); got != tc.code {
			t.Errorf("llama_exporter %v exited %d, want %d", tc.args, got, tc.code)
		}
	}
}
