package prober

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/reflector"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// startReflector runs a real reflector on a loopback UDP port.
func startReflector(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	r, err := reflector.New(reflector.Config{ListenAddresses: []string{addr}}, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	r.Serve()
	t.Cleanup(func() { r.Close() })
	return r.Addrs()[0]
}

// fastModule probes every 5ms with a 1s timeout and a 10s window. The
// timeout is far above any loopback RTT so that a test machine stalled for
// a few hundred milliseconds (CPU steal on CI machines: it once cost the
// flood tests a session's first probe at 200ms) does not read as loss; a
// probe that is really lost is lost whatever the timeout.
func fastModule() *config.Module {
	m := config.DefaultModule()
	m.Interval, m.Timeout, m.Window = 5*time.Millisecond, time.Second, 10*time.Second
	return &m
}

func TestLoopbackEndToEnd(t *testing.T) {
	dst := startReflector(t, "127.0.0.1:0")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	s, created, err := mgr.Get(context.Background(), "fast", fastModule(), dst.String())
	if err != nil || !created {
		t.Fatalf("Get: %v, created %v", err, created)
	}
	var sn Snapshot
	testlab.WaitFor(t, 30*time.Second, "200 decided probes in the window", func() bool {
		sn = s.Snapshot()
		return sn.WindowSent >= 200
	})
	if sn.WindowLost != 0 || sn.Lost != 0 || sn.LossRatio != 0 {
		t.Fatalf("loss on loopback: window %d/%d, lost %d", sn.WindowLost, sn.WindowSent, sn.Lost)
	}
	if !(sn.RTTMin > 0) || sn.RTTCount != sn.WindowSent {
		t.Fatalf("RTT min %v over %d answered of %d: every RTT must be > 0", sn.RTTMin, sn.RTTCount, sn.WindowSent)
	}
	if sn.Duplicated != 0 || sn.Late != 0 {
		t.Fatalf("duplicated %d, late %d on loopback", sn.Duplicated, sn.Late)
	}
	t.Logf("loopback over %d probes: p50 %.1fµs p99 %.1fµs max %.1fµs", sn.RTTCount,
		sn.Quantiles[0.5]*1e6, sn.Quantiles[0.99]*1e6, sn.RTTMax*1e6)
}

func TestManagerReusesAndExpiresSessions(t *testing.T) {
	dst := startReflector(t, "127.0.0.1:0")
	reg := prometheus.NewRegistry()
	mgr := NewManager(Options{MaxTargets: 1}, reg, discard)
	defer mgr.Close()
	m := fastModule()
	m.IdleTimeout = 300 * time.Millisecond
	s1, created, err := mgr.Get(context.Background(), "fast", m, dst.String())
	if err != nil || !created {
		t.Fatal(err)
	}
	s2, created, err := mgr.Get(context.Background(), "fast", m, dst.String())
	if err != nil || created || s1 != s2 {
		t.Fatalf("second Get: same session %v, created %v, err %v", s1 == s2, created, err)
	}
	if _, _, err := mgr.Get(context.Background(), "fast", m, "127.0.0.2:9"); err != ErrLimit {
		t.Fatalf("over --probe.max-targets: %v, want ErrLimit", err)
	}
	testlab.WaitFor(t, 10*time.Second, "idle expiry", func() bool { return len(mgr.Sessions()) == 0 })
	if got := testutil.ToFloat64(mgr.metrics.expired.WithLabelValues("fast")); got != 1 {
		t.Fatalf("expired_total %v, want 1", got)
	}
	if got := testutil.ToFloat64(mgr.metrics.rejected.WithLabelValues(ReasonLimit)); got != 1 {
		t.Fatalf("rejected{limit} %v, want 1", got)
	}
}

func TestReloadKeepsUnchangedModules(t *testing.T) {
	dst := startReflector(t, "127.0.0.1:0")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	keep, change := fastModule(), fastModule()
	a, _, err := mgr.Get(context.Background(), "keep", keep, dst.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := mgr.Get(context.Background(), "change", change, dst.String()); err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 10*time.Second, "replies", func() bool { return a.Snapshot().Received > 10 })
	changed := fastModule()
	changed.DSCP = 46
	kept := *keep // equal content, new pointer, as a reload produces
	mgr.ApplyConfig(&config.Config{Modules: map[string]*config.Module{"keep": &kept, "change": changed}})
	ss := mgr.Sessions()
	if len(ss) != 1 || ss[0] != a {
		t.Fatalf("after reload sessions %v, want only the unchanged module's", ss)
	}
	before := a.Snapshot().Received
	testlab.WaitFor(t, 10*time.Second, "kept session still probing", func() bool { return a.Snapshot().Received > before+10 })
}

func TestProbeHandlerStatusCodes(t *testing.T) {
	dst := startReflector(t, "127.0.0.1:0")
	mgr := NewManager(Options{MaxTargets: 2}, nil, discard)
	defer mgr.Close()
	restricted := fastModule()
	restricted.AllowedPrefixes = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}
	cfg := &config.Config{Modules: map[string]*config.Module{"default": fastModule(), "restricted": restricted}}
	srv := httptest.NewServer(&Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard})
	defer srv.Close()
	get := func(query string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/probe?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		query, body string
		code        int
	}{
		{"target=" + dst.String(), "probe_success 1", 200},
		{"target=" + dst.String() + "&debug=true", "Recent probes", 200},
		{"target=" + dst.String() + "&module=nope", `unknown module "nope"`, 400},
		{"module=default", "target parameter is missing", 400},
		{"target=127.0.0.1:0", "port must be 1..65535", 400},
		{"target=" + dst.String() + "&debug=maybe", "not a boolean", 400},
		{"target=127.0.0.1&module=restricted", "allowed_targets", 403},
		{"target=127.0.0.3:9", "", 200}, // second session: nobody answers
		{"target=127.0.0.4:9", "--probe.max-targets", 503},
	} {
		code, body := get(tc.query)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.query, code, body, tc.code, tc.body)
		}
	}
	if code, body := get("target=127.0.0.3:9"); code != 200 || !strings.Contains(body, "probe_success 0") {
		t.Errorf("unanswered target: %d %q, want 200 with probe_success 0", code, body)
	}
}
