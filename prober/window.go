package prober

import (
	"net/netip"

	"github.com/llama-exporter/llama_exporter/prober/internal/window"
)

// Snapshot is a session's state at one instant: cumulative counters and the
// summary of the window of decided probes.
type Snapshot struct {
	Counters
	// Summary is the window's: its span, loss and RTT statistics.
	window.Summary
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
	// Carried says which optional parts the session's replies have
	// carried so far: the series they feed are absent until then.
	Carried Carried
	// KernelTimestamps is true when the last answered probe was timed by
	// the kernel.
	KernelTimestamps bool
	// FlowSent and FlowLost are cumulative per-flow counts (flow_metrics).
	FlowSent, FlowLost []uint64

	// Success is true if any probe sent in the last window + timeout was
	// answered in time: a young session with its first reply is up even
	// though that probe is not in the window yet.
	Success bool
}
