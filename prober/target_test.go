package prober

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/llama-exporter/llama_exporter/config"
)

// everyProberModules is one module per registered prober, named after it,
// probing every 5ms with a short timeout so that a first scrape's wait is
// brief.
func everyProberModules(t *testing.T) map[string]*config.Module {
	t.Helper()
	mods := map[string]*config.Module{}
	for name := range Probers {
		m := decodeModule(t, name)
		m.Interval, m.Timeout, m.Window = 5*time.Millisecond, 200*time.Millisecond, 10*time.Second
		if m.Port == 0 && Probers[name].Spec.UsesPort {
			m.Port = 862 // tcp has no default port
		}
		mods[name] = m
	}
	if len(mods) < 4 {
		t.Fatalf("only %d probers registered", len(mods))
	}
	return mods
}

// probeServer serves /probe with mods, on a manager whose lookups give
// lookup's answers.
func probeServer(t *testing.T, mods map[string]*config.Module, logger *slog.Logger) (*httptest.Server, *Manager) {
	t.Helper()
	mgr := NewManager(Options{}, prometheus.NewRegistry(), logger)
	t.Cleanup(mgr.Close)
	cfg := &config.Config{Modules: mods}
	srv := httptest.NewServer(&Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: logger})
	t.Cleanup(srv.Close)
	return srv, mgr
}

// getRaw sends GET /probe?rawQuery as given, unescaped, and returns the
// status and body.
func getRaw(t *testing.T, srv *httptest.Server, rawQuery string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + "/probe?" + rawQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNonUnicastTargetsRefused: multicast, broadcast and unspecified
// destinations get a 400 that says why, for every module, with
// allowed_targets empty, whether the target is an address or a name that
// resolves to one; no session starts.
func TestNonUnicastTargetsRefused(t *testing.T) {
	mods := everyProberModules(t)
	srv, mgr := probeServer(t, mods, discard)
	mgr.lookup = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("0.0.0.0")}, nil // any name: the unspecified address
	}
	for name := range mods {
		for _, tc := range []struct{ target, reason string }{
			{"224.0.0.1", "multicast"},
			{"ff02::1", "multicast"},
			{"[ff02::1]", "multicast"},
			{"255.255.255.255", "broadcast"},
			{"0.0.0.0", "unspecified"},
			{"::", "unspecified"},
			{"[::]", "unspecified"},
			{"::ffff:224.0.0.1", "multicast"},
			{"zero.example", "unspecified"},
		} {
			if Probers[name].Spec.UsesPort && !strings.HasPrefix(tc.target, "[") && strings.Count(tc.target, ":") < 2 {
				tc.target += ":862"
			}
			q := url.Values{"module": {name}, "target": {tc.target}}.Encode()
			code, body := getRaw(t, srv, q)
			if code != http.StatusBadRequest || !strings.Contains(body, tc.reason) {
				t.Errorf("module %s target %s: %d %q, want 400 saying %q", name, tc.target, code, body, tc.reason)
			}
		}
	}
	if n := len(mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions started, want none", n)
	}
	if got := testutil.ToFloat64(mgr.metrics.rejected.WithLabelValues(ReasonBadTarget)); got != float64(9*len(mods)) {
		t.Errorf("rejected{reason=bad_target} = %v, want %d", got, 9*len(mods))
	}
}

// TestIPv6TargetForms: ::1, [::1] and [::1]:862 start a session to ::1
// with every prober that uses ports; a prober without ports (icmp) takes
// the first two and refuses the port, as it refuses one in any target.
func TestIPv6TargetForms(t *testing.T) {
	mods := everyProberModules(t)
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	want := netip.MustParseAddr("::1")
	for name, m := range mods {
		for _, target := range []string{"::1", "[::1]", "[::1]:862"} {
			s, _, err := mgr.Get(context.Background(), name, m, target)
			if !Probers[name].Spec.UsesPort && strings.HasSuffix(target, ":862") {
				if err == nil || !strings.Contains(err.Error(), "uses no port") {
					t.Errorf("module %s target %s: %v, want a refusal of the port", name, target, err)
				}
				continue
			}
			if errors.As(err, new(*UnavailableError)) {
				// No icmp sockets in this build (llama_portable): the
				// target parsed, or the error would say so.
				if host, _, perr := parseModuleTarget(target, m); perr != nil || host != "::1" {
					t.Errorf("module %s target %s: parsed as %q, %v", name, target, host, perr)
				}
				continue
			}
			if err != nil {
				t.Errorf("module %s target %s: %v", name, target, err)
				continue
			}
			if s.Dst().Addr() != want {
				t.Errorf("module %s target %s: destination %v, want %v", name, target, s.Dst(), want)
			}
		}
	}
	for _, bad := range []string{"[198.18.0.2]", "[host.example]", "[]", "[::1"} {
		if _, _, err := ParseTarget(bad, 862); err == nil {
			t.Errorf("ParseTarget(%q) accepted it", bad)
		}
	}
}

// TestQueryErrorsSayWhere: a query string that does not parse is named as
// such, with the offending part and its offset, rather than reported as a
// missing target; a repeated target, module or debug is refused.
func TestQueryErrorsSayWhere(t *testing.T) {
	srv, mgr := probeServer(t, everyProberModules(t), discard)
	for _, tc := range []struct{ query, want string }{
		{"target=127.0.0.1:862;module=icmp", `query string does not parse at offset 0, in "target=127.0.0.1:862;module=icmp"`},
		{"%%&target=127.0.0.1:862", `query string does not parse at offset 0, in "%%"`},
		{"module=stamp&target=127.0.0.1%zz", `at offset 13, in "target=127.0.0.1%zz"`},
		{"target=127.0.0.1:862&target=127.0.0.2:862", "parameter target is given 2 times"},
		{"target=127.0.0.1:862&module=stamp&module=tcp", "parameter module is given 2 times"},
		{"target=127.0.0.1:862&debug=true&debug=false", "parameter debug is given 2 times"},
	} {
		code, body := getRaw(t, srv, tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("?%s: %d %q, want 400 containing %q", tc.query, code, body, tc.want)
		}
	}
	if n := len(mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions started, want none", n)
	}
}

// TestZonedTargetSourceLabel: a zoned link-local target with no route
// (fe80::1%lo) has no known source address: src_ip is empty, not
// "invalid IP", and the debug page says unknown.
func TestZonedTargetSourceLabel(t *testing.T) {
	mods := map[string]*config.Module{"default": fastModule()}
	srv, _ := probeServer(t, mods, discard)
	q := url.Values{"target": {"[fe80::1%lo]:862"}}.Encode()
	code, body := getRaw(t, srv, q)
	if code != http.StatusOK || !strings.Contains(body, `llama_probe_target_info{`) {
		t.Fatalf("%d %q", code, body)
	}
	if strings.Contains(body, "invalid IP") || !strings.Contains(body, `src_ip=""`) {
		t.Errorf("target info: %s; want src_ip=\"\"", grepLine(body, "llama_probe_target_info{"))
	}
	_, debug := getRaw(t, srv, q+"&debug=true")
	if !strings.Contains(debug, "src=unknown") || !strings.Contains(debug, "dst=[fe80::1%lo]:862") {
		t.Errorf("debug page: %s", grepLine(debug, "Session "))
	}
}

// TestDebugPageSaysUnknown: the debug page of a session without replies
// says hops=unknown, and an icmp session's address has no port, there and
// in Session.Address (the landing page's column).
func TestDebugPageSaysUnknown(t *testing.T) {
	mods := everyProberModules(t)
	srv, mgr := probeServer(t, mods, discard)
	_, debug := getRaw(t, srv, url.Values{"module": {"stamp"}, "target": {"127.0.0.1:9"}, "debug": {"true"}}.Encode())
	if !strings.Contains(debug, "hops=unknown") || strings.Contains(debug, "hops=-1") {
		t.Errorf("debug page: %s; want hops=unknown", grepLine(debug, "Path: "))
	}
	lo := netip.MustParseAddr("127.0.0.1")
	s := newSession("icmp", mods["icmp"], resolvedTarget{name: "127.0.0.1", host: "127.0.0.1", port: 0, dst: netip.AddrPortFrom(lo, 0)}, mono())
	if got := s.Address(); got != "127.0.0.1" {
		t.Errorf("icmp session address %q, want 127.0.0.1", got)
	}
	if _, _, err := mgr.Get(context.Background(), "icmp", mods["icmp"], "127.0.0.1"); errors.As(err, new(*UnavailableError)) {
		return // no icmp sockets in this build (llama_portable)
	}
	_, debug = getRaw(t, srv, url.Values{"module": {"icmp"}, "target": {"127.0.0.1"}, "debug": {"true"}}.Encode())
	if !strings.Contains(debug, "dst=127.0.0.1 ") {
		t.Errorf("icmp debug page: %s; want dst=127.0.0.1", grepLine(debug, "Session "))
	}
}

// TestLongUnresolvableTargetLogged: a 3,000-character target is refused
// without a lookup and repeated shortened; a target that does not resolve
// is logged at warn level once, not on every scrape, and shortened.
func TestLongUnresolvableTargetLogged(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, mgr := probeServer(t, map[string]*config.Module{"default": fastModule()}, logger)
	var lookups atomic.Int32
	mgr.lookup = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		return nil, &netErr{host}
	}
	long := strings.Repeat("a", 3000) + ".example"
	code, body := getRaw(t, srv, "target="+long)
	if code != http.StatusBadRequest || len(body) > 300 || !strings.Contains(body, "at most 253 characters") {
		t.Errorf("3,000-character target: %d, %d bytes %q", code, len(body), body[:min(len(body), 300)])
	}
	name := strings.Repeat("b", 200) + ".invalid"
	for range 3 {
		if code, body := getRaw(t, srv, "target="+name); code != http.StatusOK || !strings.Contains(body, "probe_success 0") {
			t.Fatalf("unresolvable target: %d %q", code, body)
		}
	}
	if n := lookups.Load(); n != 3 {
		t.Errorf("%d lookups, want 3", n)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 || strings.Contains(lines[0], strings.Repeat("b", maxQuoted+1)) || !strings.Contains(lines[0], "(208 characters)") {
		t.Errorf("warn log, want one short line:\n%s", logs.String())
	}
}

// netErr is a lookup failure.
type netErr struct{ host string }

func (e *netErr) Error() string { return "lookup " + e.host + ": no such host" }

// grepLine returns the lines of s that contain sub, for a failure message.
func grepLine(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
