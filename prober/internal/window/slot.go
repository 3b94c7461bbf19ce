// Package window keeps a session's window of decided probes: the probe
// slots of the session's ring, and the sums, RTT order statistics and IPDV
// of the probes in the window, updated as probes enter and leave it so that
// a scrape costs the same whatever the window's length.
package window

// ProbeState is the fate of one probe.
type ProbeState uint8

// The fates of a probe, in the order a probe goes through them.
const (
	Empty    ProbeState = iota // slot never used
	Pending                    // sent, no reply, timeout not reached
	Received                   // answered within timeout
	Lost                       // no reply within timeout
)

// Direction says where a lost probe was lost, learnt from a stateful
// reflector's sequence numbers (RFC 8762 §4.3.1).
type Direction uint8

// The directions of a loss.
const (
	DirUnknown  Direction = iota // stateless reflector, or not learnt yet
	DirForward                   // never reached the reflector
	DirBackward                  // reflected, the reply was lost
)

// Slot is one probe in a session's ring: sequence number, flow, fate and
// times. 48 octets, no pointers.
type Slot struct {
	Sent      int64      // monotonic ns at send (user-space T1)
	Arrival   int64      // reply's arrival, Unix ns (kernel receive timestamp)
	TxKernel  int64      // kernel software TX timestamp, Unix ns; 0 if none
	RTT       int64      // ns, (T4 - T1) - (T3 - T2), when received
	Seq       uint32     // the probe's sequence number
	T1        uint32     // low 32 bits of the T1 the probe carries, Unix ns
	Flow      uint16     // flow index, 0..flows-1
	State     ProbeState // its fate
	Dir       Direction  // where it was lost, when it was and that is known
	Late      bool       // a reply came after timeout
	Reordered bool       // counted as reordered
}
