package prober

import (
	"math"
	"strconv"

	"github.com/llama-exporter/llama_exporter/internal/metricdef"
	"github.com/prometheus/client_golang/prometheus"
)

// Descriptors of the per-session metrics served on /probe; the README's
// Metrics section lists them.
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
	descRTT        = metricdef.Desc(metricdef.Histogram, "llama_probe_rtt_seconds", "Round-trip time of answered probes, (T4 - T1) - (T3 - T2), in seconds.", nil, nil)
	descDwell      = metricdef.Desc(metricdef.Histogram, "llama_probe_reflector_dwell_seconds", "Time the reflector held each probe, T3 - T2 from its reply, in seconds.", nil, nil)
	descWinRTT     = metricdef.Desc(metricdef.Summary, "llama_probe_window_rtt_seconds", "RTT quantiles of the window's answered probes, in seconds.", nil, nil)
	descWinMin     = gaugeDesc("llama_probe_window_rtt_min_seconds", "Smallest RTT in the window, in seconds.")
	descWinMax     = gaugeDesc("llama_probe_window_rtt_max_seconds", "Largest RTT in the window, in seconds.")
	descWinStdDev  = gaugeDesc("llama_probe_window_rtt_stddev_seconds", "Standard deviation of the window's RTTs, in seconds.")
	descJitter     = gaugeDesc("llama_probe_window_jitter_seconds", "Mean absolute difference of consecutive RTTs in the window (IPDV, RFC 3393), in seconds.")
	descFwdLost    = counterDesc("llama_probe_packets_forward_lost_total", "Lost probes that never reached the reflector (stateful reflectors only).")
	descBwdLost    = counterDesc("llama_probe_packets_backward_lost_total", "Lost probes whose reply was lost on the way back (stateful reflectors only).")
	descWinFwd     = gaugeDesc("llama_probe_window_forward_loss_ratio", "Probes lost on the way out / sent in the window, 0..1 (stateful reflectors only).")
	descWinBwd     = gaugeDesc("llama_probe_window_backward_loss_ratio", "Probes whose reply was lost / sent in the window, 0..1 (stateful reflectors only).")
	descHops       = gaugeDesc("llama_probe_forward_hops", "Hops on the way out, from the reflector's Sender TTL.")
	descHopsChange = counterDesc("llama_probe_forward_hops_changes_total", "Times the forward hop count changed.")
	descRemarked   = metricdef.Desc(metricdef.Counter, "llama_probe_dscp_remarked_total", "Replies whose DSCP was changed on the way out (forward) or back (backward); needs the Class of Service TLV (packet_size >= 52).", []string{"direction"}, nil)
	descFallbacks  = counterDesc("llama_probe_timestamp_fallbacks_total", "Answered probes timed with user-space timestamps because a kernel timestamp was missing or inconsistent.")
	descTSInvalid  = counterDesc("llama_probe_reflector_timestamps_invalid_total", "Replies whose T2/T3 are unusable (T3 before T2, zero, unconverted PTP, a dwell not shorter than the RTT): no dwell subtracted.")
	descFlowSent   = metricdef.Desc(metricdef.Counter, "llama_probe_flow_packets_sent_total", "Probes sent per ECMP flow (source port).", []string{"flow"}, nil)
	descFlowLost   = metricdef.Desc(metricdef.Counter, "llama_probe_flow_packets_lost_total", "Probes lost per ECMP flow (source port).", []string{"flow"}, nil)
	descFlowLoss   = metricdef.Desc(metricdef.Gauge, "llama_probe_flow_window_loss_ratio", "Lost / sent probes in the window per ECMP flow (source port), 0..1.", []string{"flow"}, nil)
	descFlowFwd    = metricdef.Desc(metricdef.Gauge, "llama_probe_flow_window_forward_loss_ratio", "Probes lost on the way out / sent in the window per ECMP flow (source port), 0..1 (stateful reflectors only).", []string{"flow"}, nil)
	descFlowBwd    = metricdef.Desc(metricdef.Gauge, "llama_probe_flow_window_backward_loss_ratio", "Probes whose reply was lost / sent in the window per ECMP flow (source port), 0..1 (stateful reflectors only).", []string{"flow"}, nil)
	descInfo       = metricdef.Desc(metricdef.Gauge, "llama_probe_target_info", "Where the session probes: always 1.",
		[]string{"dst_ip", "dst_port", "src_ip", "dscp", "prober", "timestamps"}, nil)
)

// counterDesc and gaugeDesc define a counter and a gauge without labels.
func counterDesc(name, help string) *prometheus.Desc {
	return metricdef.Desc(metricdef.Counter, name, help, nil, nil)
}

func gaugeDesc(name, help string) *prometheus.Desc {
	return metricdef.Desc(metricdef.Gauge, name, help, nil, nil)
}

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
	c.collectHostDrops(ch)
	rtt, dwell := c.s.histogramMetrics()
	ch <- rtt
	counter(descFallbacks, sn.TimestampFallbacks)
	if c.s.proto.ReflectorTimestamps {
		counter(descTSInvalid, sn.TimestampsInvalid)
	}
	// What no reply has carried yet is unknown: absent, not zero.
	if sn.Carried.Timestamps {
		ch <- dwell
	}
	if sn.Carried.SenderTTL {
		gauge(descHops, float64(sn.Hops))
		counter(descHopsChange, sn.HopsChanges)
	}
	if sn.Carried.ClassOfService {
		ch <- prometheus.MustNewConstMetric(descRemarked, prometheus.CounterValue, float64(sn.DSCPRemarkedForward), "forward")
	}
	if sn.Carried.ReplyDSCP {
		ch <- prometheus.MustNewConstMetric(descRemarked, prometheus.CounterValue, float64(sn.DSCPRemarkedBackward), "backward")
	}
	if sn.Stateful {
		// Against a stateless reflector direction is unknowable: absent,
		// not zero.
		counter(descFwdLost, sn.ForwardLost)
		counter(descBwdLost, sn.BackwardLost)
		gauge(descWinFwd, ratio(sn.WindowForwardLost, sn.WindowSent))
		gauge(descWinBwd, ratio(sn.WindowBackwardLost, sn.WindowSent))
	}
	for i := range sn.FlowSent {
		flow := strconv.Itoa(int(c.s.pool.flowPort(sn.Dst.Addr(), i)))
		ch <- prometheus.MustNewConstMetric(descFlowSent, prometheus.CounterValue, float64(sn.FlowSent[i]), flow)
		ch <- prometheus.MustNewConstMetric(descFlowLost, prometheus.CounterValue, float64(sn.FlowLost[i]), flow)
		ch <- prometheus.MustNewConstMetric(descFlowLoss, prometheus.GaugeValue, ratio(sn.FlowWindowLost[i], sn.FlowWindowSent[i]), flow)
		if sn.Stateful {
			ch <- prometheus.MustNewConstMetric(descFlowFwd, prometheus.GaugeValue, ratio(sn.FlowWindowForwardLost[i], sn.FlowWindowSent[i]), flow)
			ch <- prometheus.MustNewConstMetric(descFlowBwd, prometheus.GaugeValue, ratio(sn.FlowWindowBackwardLost[i], sn.FlowWindowSent[i]), flow)
		}
	}
	gauge(descWindow, sn.Window)
	gauge(descWinSent, float64(sn.WindowSent))
	gauge(descWinLost, float64(sn.WindowLost))
	gauge(descWinLoss, sn.LossRatio)
	ch <- prometheus.MustNewConstSummary(descWinRTT, uint64(sn.RTTCount), sn.RTTSum, sn.Quantiles)
	gauge(descWinMin, sn.RTTMin)
	gauge(descWinMax, sn.RTTMax)
	gauge(descWinStdDev, sn.RTTStdDev)
	gauge(descJitter, sn.Jitter)
	if c.s.paths != nil {
		c.collectPaths(ch, &sn)
	}
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
		sn.Dst.Addr().String(), dstPort(c.s.cfg, sn.Dst.Port()), srcLabel(sn.Src),
		strconv.Itoa(c.s.cfg.DSCP), c.s.cfg.Prober, timestamps(sn.KernelTimestamps))
}

// ratio is n/d, NaN when d is 0.
func ratio(n, d int) float64 {
	if d == 0 {
		return math.NaN()
	}
	return float64(n) / float64(d)
}

func timestamps(kernel bool) string {
	if kernel {
		return "kernel"
	}
	return "user"
}
