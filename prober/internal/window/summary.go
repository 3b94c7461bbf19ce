package window

// RTTQuantiles are the RTT quantiles served in
// llama_probe_window_rtt_seconds.
var RTTQuantiles = []float64{0.5, 0.9, 0.99, 0.999}

// Summary is the summary of a session's window of decided probes, those
// sent in [now - timeout - window, now - timeout]: RTTs in seconds, counts
// of probes, per-flow slices indexed by flow (0..flows-1).
type Summary struct {
	// Window is the span in seconds that the window really covers: short
	// for a new session, 0 before any probe is decided.
	Window float64
	// WindowSent and WindowLost count decided probes sent in
	// [now - timeout - window, now - timeout].
	WindowSent, WindowLost int
	// WindowForwardLost and WindowBackwardLost split WindowLost by
	// direction where a stateful reflector made it known.
	WindowForwardLost, WindowBackwardLost int
	// LossRatio is WindowLost / WindowSent, NaN when WindowSent is 0.
	LossRatio float64
	// RTT statistics over the window's answered probes, in seconds; NaN
	// when there are none (RTTCount 0).
	RTTCount               int
	RTTSum, RTTMin, RTTMax float64
	RTTStdDev, Jitter      float64
	Quantiles              map[float64]float64
	// FlowWindowSent and FlowWindowLost are per-flow window counts
	// (flow_metrics or path_trace).
	FlowWindowSent, FlowWindowLost []int
	// FlowWindowForwardLost and FlowWindowBackwardLost split
	// FlowWindowLost by direction where a stateful reflector made it known.
	FlowWindowForwardLost, FlowWindowBackwardLost []int
}
