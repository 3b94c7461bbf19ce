package prober

import "sync"

// txRing bounds how many sent probes per socket can await their kernel
// transmit timestamp; the kernel normally queues it before sendmsg returns.
const txRing = 256

// flowConn is one flow's socket and the probes awaiting their kernel
// transmit timestamps, keyed by the socket's OPT_ID counter.
type flowConn struct {
	FlowSocket
	flow int    // index among the pool's flow sockets of its family
	port uint16 // local UDP port (ICMP echo Identifier): the flow's identity

	out *outBatch // this round's probes; scheduler goroutine only

	sendMu     sync.Mutex // held across each send, keeping sends and OPT_ID keys in step
	icmpErrors bool       // ICMP errors read (path_trace): a send may fail once with one

	mu      sync.Mutex
	sends   uint32 // datagrams sent: the OPT_ID key of the next one
	stamped uint32 // transmit timestamps read
	pending [txRing]txPending
	onTx    func(key uint32, ts int64) // bound once: no allocation per drain
}

// txPending is a sent probe awaiting its kernel transmit timestamp, under
// the socket's OPT_ID key.
type txPending struct {
	s   *Session
	seq uint32
	key uint32
}

// drainTx hands the queued transmit timestamps to their sessions. After a
// batch was written (counted) it reads at most as many as are awaited,
// saving the final empty read.
func (fc *flowConn) drainTx() {
	fc.mu.Lock()
	awaited := int(fc.sends - fc.stamped)
	fc.mu.Unlock()
	if awaited > 0 {
		fc.DrainTxTimestamps(fc.onTx, awaited)
	}
}

// drainTxAll reads every queued transmit timestamp, including those of a
// batch whose write has not returned yet (so is not counted): a reply can
// be back before sendmmsg(2) returns.
func (fc *flowConn) drainTxAll() {
	fc.DrainTxTimestamps(fc.onTx, 0)
}

func (fc *flowConn) txTimestamp(key uint32, ts int64) {
	fc.mu.Lock()
	p := fc.pending[key%txRing]
	fc.stamped++
	fc.mu.Unlock()
	if p.s != nil && p.key == key {
		p.s.onTxTimestamp(p.seq, ts)
	}
}
