package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestPathTraceAbsentIsOff(t *testing.T) {
	for _, in := range []string{"modules:\n  m: {}\n", "modules:\n  m:\n    path_trace:\n"} {
		if m := mustParse(t, in).Modules["m"]; m.PathTrace != nil {
			t.Errorf("%q: path_trace = %+v, want nil (off)", in, m.PathTrace)
		}
	}
}

func TestPathTraceDefaultsAndValues(t *testing.T) {
	m := mustParse(t, "modules:\n  m:\n    path_trace: {}\n").Modules["m"]
	if m.PathTrace == nil || *m.PathTrace != DefaultPathTrace() {
		t.Fatalf("path_trace {} = %+v, want %+v", m.PathTrace, DefaultPathTrace())
	}
	if d := DefaultPathTrace(); d.Interval != time.Minute || d.MaxHops != 16 || !d.OnLoss {
		t.Errorf("DefaultPathTrace() = %+v", d)
	}
	m = mustParse(t, "modules:\n  m:\n    prober: llama\n    path_trace:\n      interval: 2s\n      max_hops: 8\n      on_loss: false\n").Modules["m"]
	if want := (PathTrace{Interval: 2 * time.Second, MaxHops: 8}); m.PathTrace == nil || *m.PathTrace != want {
		t.Errorf("path_trace = %+v, want %+v", m.PathTrace, want)
	}
}

func TestPathTraceErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"short interval", "modules:\n  m:\n    path_trace:\n      max_hops: 4\n      interval: 500ms\n",
			"line 5: modules.m.path_trace.interval: must be at least 1s, got 500ms"},
		{"zero hops", "modules:\n  m:\n    path_trace:\n      max_hops: 0\n",
			"line 4: modules.m.path_trace.max_hops: must be 1..64, got 0"},
		{"too many hops", "modules:\n  m:\n    path_trace: {max_hops: 65}\n",
			"line 3: modules.m.path_trace.max_hops: must be 1..64, got 65"},
		{"bad duration", "modules:\n  m:\n    path_trace:\n      interval: soon\n",
			`line 4: modules.m.path_trace.interval: invalid duration "soon"`},
		{"on_loss not bool", "modules:\n  m:\n    path_trace:\n      on_loss: 1\n",
			`line 4: modules.m.path_trace.on_loss: must be true or false, got "1"`},
		{"unknown field", "modules:\n  m:\n    path_trace:\n      hops: 3\n",
			"line 4: modules.m.path_trace: field hops not found in type config.PathTrace"},
		{"not a mapping", "modules:\n  m:\n    path_trace: true\n",
			`line 3: modules.m.path_trace: must be a mapping, got "true"`},
		{"duplicate key", "modules:\n  m:\n    path_trace:\n      max_hops: 3\n      max_hops: 4\n",
			`line 5: modules.m.path_trace: mapping key "max_hops" already defined at line 4`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tc.want)
			}
			var ce *Error
			if err != nil && !errors.As(err, &ce) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

// A protocol that cannot trace refuses the option, on the line of the key.
func TestPathTraceNeedsAProberThatTraces(t *testing.T) {
	RegisterProber("notrace", ProberSpec{UsesPort: true, DefaultPort: 7, DefaultPacketSize: 44, MinPacketSize: 1, MaxPacketSize: 100})
	defer func() {
		probersMu.Lock()
		delete(probers, "notrace")
		probersMu.Unlock()
	}()
	_, err := Parse([]byte("modules:\n  m:\n    prober: notrace\n    flows: 2\n    path_trace: {}\n"))
	if want := "line 5: modules.m.path_trace: is not available for prober notrace"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	m := DefaultModule()
	m.PathTrace = &PathTrace{Interval: time.Second, MaxHops: 99}
	if err := m.Validate(); err == nil || err.Error() != "path_trace.max_hops: must be 1..64, got 99" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestPathTraceEqualAndYAML(t *testing.T) {
	a, b := DefaultModule(), DefaultModule()
	pt := DefaultPathTrace()
	b.PathTrace = &pt
	if a.Equal(&b) || b.Equal(&a) {
		t.Error("tracing on equals tracing off")
	}
	pt2 := DefaultPathTrace()
	a.PathTrace = &pt2
	if !a.Equal(&b) {
		t.Error("equal path_trace settings differ")
	}
	pt2.MaxHops++
	if a.Equal(&b) {
		t.Error("different max_hops are equal")
	}
	c := mustParse(t, "modules:\n  on:\n    path_trace: {interval: 90s}\n  off: {}\n")
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "path_trace:\n            interval: 1m30s\n            max_hops: 16\n            on_loss: true\n") ||
		strings.Count(string(out), "path_trace") != 1 {
		t.Errorf("YAML shows path_trace wrongly:\n%s", out)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	assertConfigsEqual(t, c, c2)

	var p PathTrace
	if err := yaml.Unmarshal([]byte("max_hops: 3\n"), &p); err != nil || p.MaxHops != 3 || p.Interval != time.Minute {
		t.Errorf("UnmarshalYAML: %+v, %v", p, err)
	}
	if err := yaml.Unmarshal([]byte("max_hops: 0\n"), &p); err == nil || err.Error() != "line 1: path_trace.max_hops: must be 1..64, got 0" {
		t.Errorf("UnmarshalYAML error = %v", err)
	}
}
