package prober

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
)

// FuzzParseTarget: ParseTarget never panics; when it accepts a target the
// host is not empty, the port is in 1..65535, and host and port joined
// again with net.JoinHostPort parse back to the same host and port.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"198.18.0.2", "198.18.0.2:9000", "[2001:db8::1]:9000", "2001:db8::1", "::1", "[::1]",
		"host.example", "host.example:862", "localhost:65535", "::ffff:127.0.0.1", "fe80::1%eth0",
		"[fe80::1%eth0]:862", "", ":862", "host:", "host:0", "host:65536", "host:-1", "host:http",
		"http://host/", "a:b:c", "[a]:1", "[::1]:", "user@host:1", "host name", "h\x00st", "0x7f.1:1",
		"127.1", "[[::1]]:1", "1.2.3.4:00862", "%", "[%]:1",
		// A bare IPv6 address with a zone is accepted whatever the zone
		// holds, but the same host as [host]:port is refused when the zone
		// has a character of "/ \t?#@".
		"fe80::1%a/b",
	} {
		f.Add(s, uint16(862))
	}
	f.Add("host", uint16(1))
	f.Add("2001:db8::2", uint16(65535))
	f.Fuzz(func(t *testing.T, target string, defaultPort uint16) {
		if defaultPort == 0 {
			defaultPort = 862 // the config guarantees a port of 1..65535
		}
		host, port, err := ParseTarget(target, int(defaultPort))
		if err != nil {
			return
		}
		if host == "" {
			t.Fatalf("ParseTarget(%q) accepted an empty host (port %d)", target, port)
		}
		if port == 0 {
			t.Fatalf("ParseTarget(%q) = %q with port 0", target, host)
		}
		joined := net.JoinHostPort(host, strconv.Itoa(int(port)))
		h2, p2, err := ParseTarget(joined, 1)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("ParseTarget(%q) = %q, %d; but ParseTarget(%q) = %q, %d, %v", target, host, port, joined, h2, p2, err)
		}
	})
}

// noDNS replaces net.DefaultResolver, for the duration of the test, by one
// that reads /etc/hosts but sends no query: fuzzed hostnames must not leave
// the machine, even as DNS lookups.
func noDNS(tb testing.TB) {
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in this test")
	}}
	tb.Cleanup(func() { net.DefaultResolver = old })
}

// FuzzProbeParams sends arbitrary target, module and debug parameters (and
// scrape timeout headers) to the /probe handler: it never panics and
// answers 200, 400, 403 or 503. The only module allows 127.0.0.0/8, and
// DNS is off, so that fuzzed targets never send a packet off the machine:
// no session may ever exist for another address.
func FuzzProbeParams(f *testing.F) {
	noDNS(f)
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	mod := fastModule()
	mod.Interval, mod.Timeout = 100*time.Millisecond, 100*time.Millisecond
	mod.IdleTimeout = time.Second
	mod.AllowedTargets = []string{loopback.String()}
	mod.AllowedPrefixes = []netip.Prefix{loopback}
	cfg := &config.Config{Modules: map[string]*config.Module{"default": mod}}
	mgr := NewManager(Options{MaxTargets: 1}, nil, discard)
	f.Cleanup(mgr.Close)
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, TimeoutOffset: 500 * time.Millisecond, Logger: discard}

	for _, seed := range []struct{ target, module, debug, extra, timeout string }{
		{"127.0.0.1:9", "default", "", "", ""},
		{"127.0.0.1:9", "", "true", "", "10"},
		{"127.0.0.1", "default", "false", "", "0.2"},
		{"198.18.0.2", "default", "", "", ""},
		{"8.8.8.8:53", "", "", "", ""},
		{"::1", "", "", "", ""},
		{"localhost", "", "", "", ""},
		{"host.example", "", "1", "", ""},
		{"", "", "", "", ""},
		{"127.0.0.1:0", "", "", "", ""},
		{"127.0.0.1:65536", "", "maybe", "", ""},
		{"127.0.0.1:9", "nope", "", "", ""},
		{"127.0.0.1:9", "default", "", "target=10.0.0.1&module=x", "NaN"},
		{"[::ffff:127.0.0.1]:9", "", "", "%zz&;&&=", "-1"},
		{"127.0.0.2:9", "", "", "", "Inf"},
		{"http://127.0.0.1/", "", "", "", "1e-300"},
	} {
		f.Add(seed.target, seed.module, seed.debug, seed.extra, seed.timeout)
	}
	f.Fuzz(func(t *testing.T, target, module, debug, extra, timeout string) {
		q := url.Values{}
		q.Set("target", target)
		if module != "" {
			q.Set("module", module)
		}
		if debug != "" {
			q.Set("debug", debug)
		}
		req := httptest.NewRequest(http.MethodGet, "/probe", nil)
		req.URL.RawQuery = q.Encode()
		if extra != "" {
			req.URL.RawQuery += "&" + extra // raw: a part that does not parse is a 400
		}
		if timeout != "" {
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeout)
		}
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(ctx))
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusServiceUnavailable:
		default:
			t.Fatalf("/probe?%s (timeout header %q): status %d, want 200, 400, 403 or 503: %s", req.URL.RawQuery, timeout, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK && !strings.Contains(rec.Body.String(), "probe_success") && !strings.Contains(rec.Body.String(), "Session module=") &&
			!strings.Contains(rec.Body.String(), "session not started") {
			t.Fatalf("/probe?%s: 200 without probe_success nor debug text: %s", req.URL.RawQuery, rec.Body)
		}
		for _, s := range mgr.Sessions() {
			if a := s.Dst().Addr(); !loopback.Contains(a.Unmap()) {
				t.Fatalf("/probe?%s started a session for %v (target %q), outside 127.0.0.0/8", req.URL.RawQuery, a, s.Target)
			}
		}
	})
}
