package prober

import "net/netip"

// WindowQuantiles are the RTT quantiles served in
// llama_probe_window_rtt_seconds.
var WindowQuantiles = []float64{0.5, 0.9, 0.99, 0.999}

// Snapshot is a session's state at one instant: cumulative counters and the
// summary of the window of decided probes.
type Snapshot struct {
	Counters
	Dst netip.AddrPort // target address probed
	Src netip.Addr     // local address probes leave from
	// InFlight counts probes sent but not yet decided: Sent = Received +
	// Lost + InFlight.
	InFlight int
	// Stateful is true once the reflector showed per-session sequence
	// numbers, which make directional loss known.
	Stateful bool
	// Hops is the last forward hop count; -1 when unknown.
	Hops int
	// KernelTimestamps is true when the last answered probe was timed by
	// the kernel.
	KernelTimestamps bool
	// FlowSent and FlowLost are cumulative per-flow counts (flow_metrics).
	FlowSent, FlowLost []uint64
	// FlowWindowSent and FlowWindowLost are per-flow window counts
	// (flow_metrics or path_trace).
	FlowWindowSent, FlowWindowLost []int
	// FlowWindowForwardLost and FlowWindowBackwardLost split
	// FlowWindowLost by direction where a stateful reflector made it known.
	FlowWindowForwardLost, FlowWindowBackwardLost []int

	// Success is true if any probe sent in the last window + timeout was
	// answered in time: a young session with its first reply is up even
	// though that probe is not in the window yet.
	Success bool
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
}
