package reflector

import "github.com/prometheus/client_golang/prometheus"

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
			Name: "llama_reflector_up",
			Help: "1 while the STAMP reflector is serving, 0 otherwise.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llama_reflector_packets_received_total",
			Help: "UDP datagrams received by the reflector.",
		}),
		reflected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llama_reflector_packets_reflected_total",
			Help: "Session-Reflector packets sent in answer to probes.",
		}),
		badData: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llama_reflector_packets_bad_data_total",
			Help: "Datagrams dropped because they were too short or malformed.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llama_reflector_packets_throttled_total",
			Help: "Datagrams dropped by the global or per-source rate limit.",
		}),
		sendErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llama_reflector_send_errors_total",
			Help: "Replies the kernel refused to send (received = reflected + bad_data + throttled + send_errors).",
		}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "llama_reflector_sessions",
			Help: "Test sessions (sender address and port, local address, SSID) the stateful reflector numbers, over all sockets; at most 262144, further sessions are answered statelessly.",
		}, sessions),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.received, m.reflected, m.badData, m.throttled, m.sendErrs, m.sessions)
	}
	return m
}
