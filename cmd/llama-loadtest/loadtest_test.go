//go:build linux

package main

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/reflector"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"1": {1}, "0,2": {0, 2}, "0-3": {0, 1, 2, 3}, "3,1-2,1": {1, 2, 3}} {
		got, err := parseCPUList(in)
		if err != nil || len(got) != len(want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", in, got, err, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("parseCPUList(%q) = %v, want %v", in, got, want)
			}
		}
	}
	for _, bad := range []string{"", "a", "-1", "3-1", "1-", "5000"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) succeeded", bad)
		}
	}
}

func TestReflectorFlags(t *testing.T) {
	ok := reflectorMode{Baseline: "process", Sockets: 4, Window: 32, PacketSize: 44, Duration: 10 * time.Second,
		Warmup: 2 * time.Second, Drain: time.Second, LossTimeout: 200 * time.Millisecond, Rounds: 1, SampleEvery: 16,
		CPUReflector: "1", CPUGenerator: "0"}
	if err := ok.check(); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
	for name, mutate := range map[string]func(*reflectorMode){
		"no sockets":          func(m *reflectorMode) { m.Sockets = 0 },
		"huge window":         func(m *reflectorMode) { m.Window = 5000 },
		"short packet":        func(m *reflectorMode) { m.PacketSize = 43 },
		"zero duration":       func(m *reflectorMode) { m.Duration = 0 },
		"zero drain":          func(m *reflectorMode) { m.Drain = 0 },
		"tiny loss timeout":   func(m *reflectorMode) { m.LossTimeout = time.Millisecond },
		"no rounds":           func(m *reflectorMode) { m.Rounds = 0 },
		"nothing to measure":  func(m *reflectorMode) { m.Baseline = "none" },
		"bad cpu list":        func(m *reflectorMode) { m.CPUReflector = "x" },
		"inprocess same core": func(m *reflectorMode) { m.Baseline = "inprocess"; m.CPUReflector = "0" },
		"negative rate":       func(m *reflectorMode) { m.Rate = -1 },
		"compare, no binary":  func(m *reflectorMode) { m.CompareArgs = "--collector.host-drops" },
	} {
		m := ok
		mutate(&m)
		if err := m.check(); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

func TestSessionsFlags(t *testing.T) {
	ok := sessionsMode{Sessions: 10000, Interval: time.Second, ProbeTimeout: time.Second, Window: 30 * time.Second,
		Flows: 8, Duration: 30 * time.Second, Warmup: 5 * time.Second, CreateConcurrency: 256, CreateTimeout: time.Minute,
		ScrapeRate: 20, ScrapeConcurrency: 8, SweepConcurrency: 32, Reflector: "separate"}
	if err := ok.check(); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
	for name, mutate := range map[string]func(*sessionsMode){
		"no sessions":       func(m *sessionsMode) { m.Sessions = 0 },
		"too many sessions": func(m *sessionsMode) { m.Sessions = maxSessions + 1 },
		"window < interval": func(m *sessionsMode) { m.Window = 500 * time.Millisecond },
		"no flows":          func(m *sessionsMode) { m.Flows = 0 },
		"negative rate":     func(m *sessionsMode) { m.ScrapeRate = -1 },
		"cpu for embedded":  func(m *sessionsMode) { m.Reflector = "embedded"; m.CPUReflector = "1" },
	} {
		m := ok
		mutate(&m)
		if err := m.check(); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

func TestRTTFlags(t *testing.T) {
	ok := rttMode{Probes: 10000, Interval: time.Millisecond, ProbeTimeout: time.Second, Flows: 8, Burners: 2}
	if err := ok.check(); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
	if w := ok.window(); w != 20*time.Second {
		t.Errorf("window = %v, want 20s", w)
	}
	for name, mutate := range map[string]func(*rttMode){
		"no probes":       func(m *rttMode) { m.Probes = 0 },
		"interval too ms": func(m *rttMode) { m.Interval = time.Microsecond },
		"too long":        func(m *rttMode) { m.Probes, m.Interval = 1_000_000, 10*time.Second },
		"burners":         func(m *rttMode) { m.Burners = -1 },
	} {
		m := ok
		mutate(&m)
		if err := m.check(); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

func TestSessionTarget(t *testing.T) {
	seen := map[string]bool{}
	for i := range 70000 {
		s := sessionTarget(i, 862)
		if seen[s] {
			t.Fatalf("target %d (%s) repeats", i, s)
		}
		seen[s] = true
		if strings.HasSuffix(s, ".0:862") || strings.HasSuffix(s, ".255:862") || !strings.HasPrefix(s, "127.") {
			t.Fatalf("target %d = %s", i, s)
		}
	}
	for i, want := range map[int]string{0: "127.1.0.1:862", 253: "127.1.0.254:862", 254: "127.1.1.1:862", 254 * 256: "127.2.0.1:862"} {
		if got := sessionTarget(i, 862); got != want {
			t.Errorf("sessionTarget(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestDurationMS(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Second: "1000ms", time.Millisecond: "1ms", 90 * time.Second: "90000ms", 1500 * time.Microsecond: "1.5ms"} {
		if got := durationMS(d); got != want {
			t.Errorf("durationMS(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestPlainProber runs the sessions mode's baseline against a real
// reflector: every probe is answered, and its result line reads back.
func TestPlainProber(t *testing.T) {
	r, err := reflector.New(reflector.Config{ListenAddresses: []string{"0.0.0.0:0"}}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.Serve()
	defer r.Close()
	var out bytes.Buffer
	// 300 targets every 100 ms for 500 ms: about 1,500 probes.
	if err := runPlainProber(&out, int(r.Addrs()[0].Port()), 300, 2, 100*time.Millisecond, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	res, err := parsePlainResult(out.Bytes())
	if err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if res.sent < 1000 || res.received != res.sent {
		t.Errorf("sent %d, received %d: want about 1500 sent, all received", res.sent, res.received)
	}
	if res.meanRTT <= 0 || res.meanRTT > time.Second {
		t.Errorf("mean RTT %v", res.meanRTT)
	}
	for _, bad := range []struct{ port, n, flows int }{{0, 10, 1}, {862, 0, 1}, {862, 10, 0}} {
		if err := runPlainProber(io.Discard, bad.port, bad.n, bad.flows, time.Second, time.Second); err == nil {
			t.Errorf("port %d, targets %d, flows %d accepted", bad.port, bad.n, bad.flows)
		}
	}
	if _, err := parsePlainResult([]byte("no result\n")); err == nil {
		t.Error("a log without a result line parsed")
	}
}
