package reflector

import (
	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/prometheus/client_golang/prometheus"
)

// The metric families served here, name and type (see metricdef).
var (
	nameUp                    = metricdef.Name(metricdef.Gauge, "llama_reflector_up")
	namePacketsReceivedTotal  = metricdef.Name(metricdef.Counter, "llama_reflector_packets_received_total")
	namePacketsReflectedTotal = metricdef.Name(metricdef.Counter, "llama_reflector_packets_reflected_total")
	namePacketsBadDataTotal   = metricdef.Name(metricdef.Counter, "llama_reflector_packets_bad_data_total")
	namePacketsThrottledTotal = metricdef.Name(metricdef.Counter, "llama_reflector_packets_throttled_total")
	nameSendErrorsTotal       = metricdef.Name(metricdef.Counter, "llama_reflector_send_errors_total")
	nameSessions              = metricdef.Name(metricdef.Gauge, "llama_reflector_sessions")
)

// metrics are the reflector's own series on /metrics (llama_reflector_*).
type metrics struct {
	up        prometheus.Gauge
	received  prometheus.Counter
	reflected prometheus.Counter
	badData   prometheus.Counter
	throttled prometheus.Counter
	sendErrs  prometheus.Counter
	sessions  prometheus.GaugeFunc
}

// newMetrics creates the metrics and registers them with reg unless it is
// nil; sessions reads the stateful session count when scraped.
func newMetrics(reg prometheus.Registerer, sessions func() float64) *metrics {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameUp,
			Help: "1 while the STAMP reflector is serving, 0 otherwise.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namePacketsReceivedTotal,
			Help: "UDP datagrams received by the reflector.",
		}),
		reflected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namePacketsReflectedTotal,
			Help: "Session-Reflector packets sent in answer to probes.",
		}),
		badData: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namePacketsBadDataTotal,
			Help: "Datagrams dropped because they were too short or malformed.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: namePacketsThrottledTotal,
			Help: "Datagrams dropped by the global or per-source rate limit.",
		}),
		sendErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: nameSendErrorsTotal,
			Help: "Replies the kernel refused to send (received = reflected + bad_data + throttled + send_errors).",
		}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: nameSessions,
			Help: "Test sessions (sender address and port, local address, SSID) the stateful reflector numbers, over all sockets; at most 262144, further sessions are answered statelessly.",
		}, sessions),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.received, m.reflected, m.badData, m.throttled, m.sendErrs, m.sessions)
	}
	return m
}
