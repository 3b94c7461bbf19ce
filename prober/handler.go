package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/llama-exporter/llama_exporter/prober/internal/window"
)

// The metric families served here, name and type (see metricdef).
var (
	nameProbeSuccess         = metricdef.Name(metricdef.Gauge, "probe_success")
	nameProbeDurationSeconds = metricdef.Name(metricdef.Gauge, "probe_duration_seconds")
)

// defaultScrapeTimeout applies when Prometheus sends no
// X-Prometheus-Scrape-Timeout-Seconds header, as in blackbox_exporter.
const defaultScrapeTimeout = 120 * time.Second

// Handler serves /probe?target=HOST[:PORT]&module=NAME[&debug=true]
// (the README's HTTP endpoints and Probe sessions sections).
type Handler struct {
	Manager *Manager
	// Config returns the running configuration.
	Config func() *config.Config
	// TimeoutOffset is subtracted from the scrape timeout header.
	TimeoutOffset time.Duration
	Logger        *slog.Logger

	notStarted logOnce // targets whose failure to start was logged at warn level
}

// ServeHTTP answers 400 for a missing or bad target, an unknown module or a
// bad parameter, 403 for a target outside allowed_targets, 503 when
// --probe.max-targets is reached, 500 when the module's prober cannot work
// on this host (*UnavailableError, such as icmp without ping or raw
// sockets), and otherwise 200 with the session's metrics, probe_success 0
// when the target does not answer.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	req, err := h.parseRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), req.timeout)
	defer cancel()

	sess, created, err := h.Manager.Get(ctx, req.moduleName, req.mod, req.target)
	if err != nil {
		h.writeGetError(w, r, req, err, start)
		return
	}
	if created {
		sess.waitFirst(ctx)
	}
	snap := sess.Snapshot()
	if req.debug {
		writeDebug(w, sess, snap, req.mod)
		return
	}
	serve(w, r, snap.Success, start, sessionCollector{s: sess, snap: snap})
}

// probeRequest is a /probe request's parameters, checked.
type probeRequest struct {
	moduleName string
	mod        *config.Module
	target     string // as given; Manager.Get checks it
	debug      bool
	timeout    time.Duration // from the scrape timeout header
}

// parseRequest reads the parameters of r, the module "default" when none is
// named. Its error, a query string that does not parse or repeats a
// parameter, a bad debug parameter, an unknown module (counted) or a bad
// scrape timeout header in that order, is the text of a 400 answer.
func (h *Handler) parseRequest(r *http.Request) (probeRequest, error) {
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		return probeRequest{}, err
	}
	req := probeRequest{moduleName: q.Get("module")}
	if req.moduleName == "" {
		req.moduleName = "default"
	}
	if v := q.Get("debug"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return probeRequest{}, fmt.Errorf("debug parameter %q is not a boolean", v)
		}
		req.debug = b
	}
	mod, ok := h.Config().Modules[req.moduleName]
	if !ok {
		h.Manager.UnknownModule()
		return probeRequest{}, fmt.Errorf("unknown module %q", req.moduleName)
	}
	req.mod = mod
	timeout, err := scrapeTimeout(r, h.TimeoutOffset)
	if err != nil {
		return probeRequest{}, err
	}
	req.timeout = timeout
	req.target = q.Get("target")
	return req, nil
}

// parseQuery decodes a /probe query string. Unlike url.Values, which
// drops what does not parse, it fails on the first parameter that does not
// (a ';' separator, a bad %-escape) and says where, and on a repeated
// target, module or debug, of which it could only use one.
func parseQuery(raw string) (url.Values, error) {
	off := 0
	for _, part := range strings.Split(raw, "&") {
		if _, err := url.ParseQuery(part); err != nil {
			return nil, fmt.Errorf("query string does not parse at offset %d, in %q: %v (separate parameters with &, escape %% as %%25)", off, quoted(part), err)
		}
		off += len(part) + 1
	}
	q, _ := url.ParseQuery(raw)
	for _, name := range []string{"target", "module", "debug"} {
		if n := len(q[name]); n > 1 {
			return nil, fmt.Errorf("parameter %s is given %d times; give it once", name, n)
		}
	}
	return q, nil
}

// writeGetError answers a request whose session Manager.Get did not return.
// Errors of the request or of this host get an error status; a target that
// cannot be resolved or reached is down, not a bad request, so it is served
// as probe_success 0 (or said in words on the debug page).
func (h *Handler) writeGetError(w http.ResponseWriter, r *http.Request, req probeRequest, err error, start time.Time) {
	var bad *BadTargetError
	switch {
	case errors.As(err, &bad):
		http.Error(w, bad.Error(), http.StatusBadRequest)
	case errors.Is(err, ErrNotAllowed):
		http.Error(w, fmt.Sprintf("target %q: %v", quoted(req.target), err), http.StatusForbidden)
	case errors.Is(err, ErrLimit):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case errors.As(err, new(*UnavailableError)):
		// The module cannot probe from this host: say what is missing.
		h.logNotStarted(req, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		// Resolution or socket failure: the target is down, not the request.
		h.logNotStarted(req, err)
		if req.debug {
			fmt.Fprintf(w, "session not started: %v\n", err)
			return
		}
		serve(w, r, false, start, nil)
	}
}

// logNotStarted logs why a session did not start, at warn level once per
// (module, target) and notStartedEvery, at debug level in between: a
// target that does not resolve fails on every scrape.
func (h *Handler) logNotStarted(req probeRequest, err error) {
	level := slog.LevelDebug
	if h.notStarted.first(req.moduleName+"\x00"+req.target, time.Now()) {
		level = slog.LevelWarn
	}
	msg := err.Error()
	if len(req.target) > maxQuoted {
		host := req.target
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		msg = strings.ReplaceAll(msg, host, quoted(host)) // resolver errors repeat the name
	}
	h.Logger.Log(context.Background(), level, "probe session not started",
		"module", req.moduleName, "target", quoted(req.target), "err", msg)
}

// notStartedEvery is how often a target that cannot start a session is
// logged at warn level.
const notStartedEvery = 10 * time.Minute

// logOnce remembers when each key was last logged at warn level. It forgets
// keys older than notStartedEvery once it holds more than maxLogOnceKeys,
// so that scrapes of ever new targets cannot grow it without bound.
type logOnce struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const maxLogOnceKeys = 1024

// first reports whether key was not logged within notStartedEvery of now,
// and records now for it if so.
func (l *logOnce) first(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < notStartedEvery {
		return false
	}
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	if len(l.last) >= maxLogOnceKeys {
		for k, t := range l.last {
			if now.Sub(t) >= notStartedEvery {
				delete(l.last, k)
			}
		}
		if len(l.last) >= maxLogOnceKeys {
			return false // flooded: the rest go to debug until entries age out
		}
	}
	l.last[key] = now
	return true
}

// serve writes probe_success, probe_duration_seconds and the session's
// metrics in the format the scraper asked for.
func serve(w http.ResponseWriter, r *http.Request, success bool, start time.Time, c prometheus.Collector) {
	reg := prometheus.NewRegistry()
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: nameProbeSuccess, Help: "1 if any probe in the window (or since) was answered, 0 otherwise."})
	dur := prometheus.NewGauge(prometheus.GaugeOpts{Name: nameProbeDurationSeconds, Help: "Time taken to serve this scrape, in seconds."})
	reg.MustRegister(up, dur)
	if c != nil {
		reg.MustRegister(c)
	}
	if success {
		up.Set(1)
	}
	dur.Set(time.Since(start).Seconds())
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// scrapeTimeout is the scrape deadline: the Prometheus header minus offset,
// or defaultScrapeTimeout without the header.
func scrapeTimeout(r *http.Request, offset time.Duration) (time.Duration, error) {
	v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	if v == "" {
		return defaultScrapeTimeout, nil
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(secs) || secs <= 0 {
		return 0, fmt.Errorf("bad X-Prometheus-Scrape-Timeout-Seconds %q", v)
	}
	t := time.Duration(secs*float64(time.Second)) - offset
	if t <= 0 {
		t = time.Duration(secs * float64(time.Second)) // offset larger than the timeout: ignore it
	}
	return t, nil
}

// writeDebug writes the human-readable debug page of a session.
func writeDebug(w http.ResponseWriter, s *Session, sn Snapshot, mod *config.Module) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var b strings.Builder
	fmt.Fprintf(&b, "Session module=%s target=%s dst=%s src=%s ssid=%d\n\n", s.Module, s.Target, s.Address(), orUnknown(srcLabel(sn.Src)), s.ssid.Load())
	fmt.Fprintf(&b, "Counters: sent=%d received=%d lost=%d late=%d duplicated=%d reordered=%d\n",
		sn.Sent, sn.Received, sn.Lost, sn.Late, sn.Duplicated, sn.Reordered)
	fmt.Fprintf(&b, "Path: timestamps=%s (fallbacks %d) stateful_reflector=%v forward_lost=%d backward_lost=%d hops=%s (changes %d) dscp_remarked forward=%d backward=%d\n",
		timestamps(sn.KernelTimestamps), sn.TimestampFallbacks, sn.Stateful, sn.ForwardLost, sn.BackwardLost,
		hops(sn.Hops), sn.HopsChanges, sn.DSCPRemarkedForward, sn.DSCPRemarkedBackward)
	if s.proto.ReflectorTimestamps {
		fmt.Fprintf(&b, "Reflector timestamps: timestamps_invalid=%d (replies whose T2/T3 were unusable; their RTT includes the dwell)\n", sn.TimestampsInvalid)
	}
	fmt.Fprintf(&b, "Window: span=%.3fs sent=%d lost=%d (forward %d, backward %d) loss_ratio=%g\n",
		sn.Window, sn.WindowSent, sn.WindowLost, sn.WindowForwardLost, sn.WindowBackwardLost, sn.LossRatio)
	b.WriteString(hostDropsLine(s))
	fmt.Fprintf(&b, "Window RTT: count=%d min=%s p50=%s p90=%s p99=%s p99.9=%s max=%s stddev=%s jitter=%s\n\n",
		sn.RTTCount, secs(sn.RTTMin), secs(sn.Quantiles[0.5]), secs(sn.Quantiles[0.9]), secs(sn.Quantiles[0.99]),
		secs(sn.Quantiles[0.999]), secs(sn.RTTMax), secs(sn.RTTStdDev), secs(sn.Jitter))
	b.WriteString("Recent probes (newest first):\n  seq        flow  age         state     rtt\n")
	now := mono()
	for _, sl := range s.recent(20) {
		state := [...]string{"empty", "pending", "received", "lost"}[sl.State]
		if sl.Late {
			state += "+late"
		}
		rtt := "-"
		if sl.State == window.Received {
			rtt = time.Duration(sl.RTT).String()
		}
		fmt.Fprintf(&b, "  %-10d %-5d %-11s %-9s %s\n", sl.Seq, sl.Flow, time.Duration(now-sl.Sent).Round(time.Microsecond), state, rtt)
	}
	if s.paths != nil {
		writePathDebug(&b, s, &sn)
	}
	b.WriteString("\nModule configuration:\n")
	cfg := &config.Config{Modules: map[string]*config.Module{s.Module: mod}}
	if y, err := cfg.YAML(); err == nil {
		b.Write(y)
	}
	io.WriteString(w, b.String())
}

func secs(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return time.Duration(v * 1e9).String()
}

// hops is the debug page's forward hop count: "unknown" until a reply
// carries the sender's TTL.
func hops(n int) string {
	if n < 0 {
		return "unknown"
	}
	return strconv.Itoa(n)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
