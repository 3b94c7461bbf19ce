package prober

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Descriptors of the per-session metrics served on /probe (DESIGN §7).
var (
	descSent       = counterDesc("llama_probe_packets_sent_total", "Probes sent since the session started.")
	descReceived   = counterDesc("llama_probe_packets_received_total", "Probes answered within timeout.")
	descLost       = counterDesc("llama_probe_packets_lost_total", "Probes not answered within timeout.")
	descLate       = counterDesc("llama_probe_packets_late_total", "Replies that came after timeout; their probes stay lost.")
	descDuplicated = counterDesc("llama_probe_packets_duplicated_total", "Extra replies to a probe already answered.")
	descReordered  = counterDesc("llama_probe_packets_reordered_total", "Replies whose sequence number is below the highest already answered.")
	descWindow     = gaugeDesc("llama_probe_window_seconds", "Span in seconds that the summary window really covers (short for a new session).")
	descWinSent    = gaugeDesc("llama_probe_window_packets_sent", "Decided probes in the window.")
	descWinLost    = gaugeDesc("llama_probe_window_packets_lost", "Lost probes in the window.")
	descWinLoss    = gaugeDesc("llama_probe_window_loss_ratio", "Lost / sent probes in the window, 0..1; NaN before any probe is decided.")
	descWinRTT     = prometheus.NewDesc("llama_probe_window_rtt_seconds", "RTT quantiles of the window's answered probes, in seconds.", nil, nil)
	descWinMin     = gaugeDesc("llama_probe_window_rtt_min_seconds", "Smallest RTT in the window, in seconds.")
	descWinMax     = gaugeDesc("llama_probe_window_rtt_max_seconds", "Largest RTT in the window, in seconds.")
	descWinStdDev  = gaugeDesc("llama_probe_window_rtt_stddev_seconds", "Standard deviation of the window's RTTs, in seconds.")
	descJitter     = gaugeDesc("llama_probe_window_jitter_seconds", "Mean absolute difference of consecutive RTTs in the window (IPDV, RFC 3393), in seconds.")
	descInfo       = prometheus.NewDesc("llama_probe_target_info", "Where the session probes: always 1.",
		[]string{"dst_ip", "dst_port", "src_ip", "dscp", "prober", "timestamps"}, nil)
)

func counterDesc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
func gaugeDesc(name, help string) *prometheus.Desc   { return prometheus.NewDesc(name, help, nil, nil) }

// sessionCollector exposes one session's snapshot and RTT histogram.
type sessionCollector struct {
	s    *Session
	snap Snapshot
}

// Describe is empty: the collector is unchecked, built anew per scrape.
func (c sessionCollector) Describe(chan<- *prometheus.Desc) {}

// Collect emits the session's metrics.
func (c sessionCollector) Collect(ch chan<- prometheus.Metric) {
	sn := c.snap
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(descSent, sn.Sent)
	counter(descReceived, sn.Received)
	counter(descLost, sn.Lost)
	counter(descLate, sn.Late)
	counter(descDuplicated, sn.Duplicated)
	counter(descReordered, sn.Reordered)
	c.s.hist.Collect(ch)
	gauge(descWindow, sn.Window)
	gauge(descWinSent, float64(sn.WindowSent))
	gauge(descWinLost, float64(sn.WindowLost))
	gauge(descWinLoss, sn.LossRatio)
	ch <- prometheus.MustNewConstSummary(descWinRTT, uint64(sn.RTTCount), sn.RTTSum, sn.Quantiles)
	gauge(descWinMin, sn.RTTMin)
	gauge(descWinMax, sn.RTTMax)
	gauge(descWinStdDev, sn.RTTStdDev)
	gauge(descJitter, sn.Jitter)
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
		sn.Dst.Addr().String(), strconv.Itoa(int(sn.Dst.Port())), sn.Src.String(),
		strconv.Itoa(c.s.cfg.DSCP), c.s.cfg.Prober, "user")
}
