package prober

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// tcpModule returns a validated tcp module with fastModule's timings and
// the given port (0: targets name theirs).
func tcpModule(t testing.TB, port int) *config.Module {
	t.Helper()
	m := fastModule()
	m.Prober, m.PacketSize, m.Port = config.ProberTCP, 0, port
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTCPModuleValidation: a tcp module needs no port (targets then name
// theirs) and refuses packet_size, which a handshake has no use for.
func TestTCPModuleValidation(t *testing.T) {
	m := tcpModule(t, 0)
	m.PacketSize = 44
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "packet_size") {
		t.Errorf("packet_size 44 on a tcp module: error %v, want one about packet_size", err)
	}
	m.PacketSize, m.Port = 0, 65536
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("port 65536 on a tcp module: error %v, want one about port", err)
	}
}

// TestTCPTargetWithoutPortIs400: in a tcp module without a port, a target
// that names none is a bad request with a one-line reason, and no session
// starts.
func TestTCPTargetWithoutPortIs400(t *testing.T) {
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	cfg := &config.Config{Modules: map[string]*config.Module{"tcp": tcpModule(t, 0)}}
	h := &Handler{Manager: mgr, Config: func() *config.Config { return cfg }, Logger: discard}
	targets := []string{"198.18.0.1", "2001:2::1", "host.example"}
	for _, target := range targets {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/probe?module=tcp&target="+url.QueryEscape(target), nil))
		body := strings.TrimSuffix(w.Body.String(), "\n")
		if w.Code != 400 || strings.Contains(body, "\n") || !strings.Contains(body, "names no port") {
			t.Errorf("target %s: status %d, body %q; want 400 and one line saying it names no port", target, w.Code, body)
		}
	}
	if n := testutil.ToFloat64(mgr.metrics.rejected.WithLabelValues(ReasonBadTarget)); n != float64(len(targets)) {
		t.Errorf("%v bad_target rejections, want %d", n, len(targets))
	}
	if n := len(mgr.Sessions()); n != 0 {
		t.Errorf("%d sessions started, want none", n)
	}
}

// TestTCPRTTAndSeries: an answered handshake is timed by the kernel's RTT
// when it lies within the monotonic one (else by the latter, counted as a
// fallback), and a tcp session has none of the series that need a
// reflector, which a stamp session has.
func TestTCPRTTAndSeries(t *testing.T) {
	dst := netip.MustParseAddrPort("198.18.0.2:443")
	s := newSession("tcp", tcpModule(t, 443), resolvedTarget{name: dst.String(), host: "198.18.0.2", port: 443, dst: dst}, 0)
	s.pool = &pool{proto: &tcpProber}
	s.recordSend(0)
	s.onReply(&timedReply{seq: 0, reflSeq: 0, t4: ms, read: ms, rtt: 300_000, senderTTL: -1, dscp: -1, dscp2: -1})
	s.recordSend(100 * ms)
	s.onReply(&timedReply{seq: 1, reflSeq: 1, t4: 102 * ms, read: 102 * ms, rtt: 5 * ms, senderTTL: -1, dscp: -1, dscp2: -1})
	sn := s.snapshot(1200 * ms)
	if sn.RTTMin != 0.0003 || sn.RTTMax != 0.002 || sn.TimestampFallbacks != 1 {
		t.Errorf("RTTs %v..%v with %d fallbacks; want 0.0003 (kernel), 0.002 (monotonic: the kernel's 5ms is longer) and 1",
			sn.RTTMin, sn.RTTMax, sn.TimestampFallbacks)
	}
	reflectorOnly := []string{"llama_probe_reflector_dwell_seconds", "llama_probe_forward_hops_changes_total",
		"llama_probe_dscp_remarked_total"}
	names := exposed(t, s, sn)
	for _, n := range append(reflectorOnly, "llama_probe_forward_hops", "llama_probe_packets_forward_lost_total",
		"llama_probe_window_backward_loss_ratio") {
		if names[n] != nil {
			t.Errorf("tcp session exposes %s", n)
		}
	}
	for _, n := range []string{"llama_probe_rtt_seconds", "llama_probe_window_loss_ratio", "llama_probe_target_info"} {
		if names[n] == nil {
			t.Errorf("tcp session lacks %s", n)
		}
	}
	if l := labels(names["llama_probe_target_info"]); l["prober"] != "tcp" || l["timestamps"] != "user" || l["dst_port"] != "443" {
		t.Errorf("llama_probe_target_info labels %v, want prober tcp, timestamps user (the last RTT fell back), dst_port 443", l)
	}
	// A stamp session has them once a reply carried what they need.
	m := config.DefaultModule()
	s = newSession("stamp", &m, resolvedTarget{name: dst.String(), host: "198.18.0.2", port: 443, dst: dst}, 0)
	s.pool = &pool{proto: &stampProber, ttl: [2]int{64, 64}}
	s.recordSend(0)
	s.onReply(&timedReply{seq: 0, reflSeq: 0, t4: ms, read: ms, stamps: StampsUsable, dwell: 1000, senderTTL: 62, dscp: 0, dscp2: 0})
	names = exposed(t, s, s.snapshot(1200*ms))
	for _, n := range append(reflectorOnly, "llama_probe_forward_hops") {
		if names[n] == nil {
			t.Errorf("stamp session lacks %s", n)
		}
	}
}

// exposed returns the metric families a session's collector exposes, by
// name.
func exposed(t *testing.T, s *Session, sn Snapshot) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(sessionCollector{s: s, snap: sn})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	return byName
}

// labels returns the labels of a family's first metric.
func labels(mf *dto.MetricFamily) map[string]string {
	out := map[string]string{}
	if mf == nil || len(mf.Metric) == 0 {
		return out
	}
	for _, l := range mf.Metric[0].Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestTCPHandshakeLimit: a probe that finds every handshake slot taken is
// not started; it counts as a send error and is lost. (With no slot at
// all, nothing leaves the host.)
func TestTCPHandshakeLimit(t *testing.T) {
	defer func(l *slotLimit) { handshakeSlots = l }(handshakeSlots)
	handshakeSlots = &slotLimit{max: 0}
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	s, _, err := mgr.Get(context.Background(), "tcp", tcpModule(t, 9), "198.18.0.1")
	if err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 10*time.Second, "20 decided probes", func() bool { return s.Snapshot().Lost >= 20 })
	errs := testutil.ToFloat64(mgr.metrics.sendErrors.WithLabelValues("tcp"))
	sn := s.Snapshot()
	if sn.Received != 0 || errs < float64(sn.Lost) || errs > float64(sn.Sent) {
		t.Errorf("received %d, lost %d of %d sent, %v send errors; want every probe a send error, lost", sn.Received, sn.Lost, sn.Sent, errs)
	}
}
