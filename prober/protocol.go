package prober

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// Protocol is one probe protocol's wire format: how a probe datagram is
// built and how a received datagram is read. A module's pool makes one
// Protocol per goroutine that uses it (the scheduler, each receive loop),
// so an implementation may keep state that cannot be shared, such as an
// HMAC.
type Protocol interface {
	// Encode writes probe p into buf, whose length is the module's
	// packet_size plus the Prober's HeaderLen, and returns the datagram to
	// send: buf, or a prefix of it. An error drops the probe (it stays sent, and will be lost).
	Encode(buf []byte, p *Probe) ([]byte, error)
	// Decode reads datagram b, received on a flow socket, into r. It
	// returns ErrNotOurs for a well-formed datagram that answers no probe
	// of ours, and any other error for bad data; either way the datagram
	// is counted and dropped.
	Decode(b []byte, r *DecodedReply) error
}

// ErrNotOurs is returned by Protocol.Decode for a datagram that is well
// formed but not a reply to one of our probes (a stray). It is counted as
// unmatched rather than as bad data.
var ErrNotOurs = errors.New("not a reply to our probes")

// Probe names the probe that Protocol.Encode builds.
type Probe struct {
	// SSID identifies the session among those of the pool that probe the
	// same address (RFC 8972 §3); never 0.
	SSID uint16
	// Seq is the session's sequence number of the probe, from 0.
	Seq uint32
	// Flow is the index, 0..flows-1, of the flow socket it leaves from.
	Flow int
	// DSCP is the module's DSCP, 0..63, that the probe asks the reflector
	// to answer with.
	DSCP int
	// IPv6 is true when the probe goes to an IPv6 address.
	IPv6 bool
	// T1 is the send time, Unix ns, that the probe carries (STAMP's
	// Sender Timestamp, RFC 8762 §4.2.1); 0: the time of encoding.
	T1 int64
}

// DecodedReply is what Protocol.Decode learnt from a received datagram: the key
// that finds its session (with the sender's address), the probe it
// answers, and what the reflector reported. Fields a protocol does not
// carry keep the "unknown" values that Decode must set.
type DecodedReply struct {
	// SSID is the session key the reply carries; 0 when it carries none,
	// and the session is then found by address alone.
	SSID uint16
	// Seq is the sequence number of the probe it answers.
	Seq uint32
	// ReflectorSeq is the reflector's own sequence number (RFC 8762
	// §4.3.1): equal to Seq when the reflector copies it, or has none.
	ReflectorSeq uint32
	// T1 is the probe's send time, Unix ns, as the reply echoes it (the
	// Session-Sender Timestamp, RFC 8762 §4.3.1); 0 when it echoes none.
	// It tells apart the sessions that probe one address when the
	// reflector does not return their SSIDs.
	T1 int64
	// Stamps says whether the reply carries the reflector's T2 and T3,
	// and whether they can be used.
	Stamps Stamps
	// Dwell is the reflector's T3 - T2, 0 or more, when Stamps is
	// StampsUsable.
	Dwell time.Duration
	// SenderTTL is the TTL / Hop Limit the probe arrived with at the
	// reflector, 0..254; -1 when unknown.
	SenderTTL int
	// DSCP2 is the DSCP the reflector received the probe with (RFC 8972
	// §5.2); -1 when unknown.
	DSCP2 int
}

// Stamps says what a reply tells of the reflector's receive and transmit
// timestamps, T2 and T3 (RFC 8762 §4.3.1).
type Stamps uint8

const (
	// StampsNone: the reply carries no T2 and T3.
	StampsNone Stamps = iota
	// StampsUsable: T3 - T2 is the reflector's dwell.
	StampsUsable
	// StampsInvalid: the reply carries T2 and T3 that cannot be used: one
	// is zero, T3 is before T2, or a PTP timestamp has a nanoseconds field
	// of 10^9 or more (an NTP fraction left unconverted).
	StampsInvalid
)

// Prober is one entry of the registry: a protocol's configuration limits
// and the constructor of its Protocol values.
type Prober struct {
	// Spec gives the module defaults and limits that configuration
	// validation applies to this protocol.
	Spec config.ProberSpec
	// New returns a Protocol for one goroutine of a module's pool. The
	// module has been validated.
	New func(m *config.Module) Protocol
	// Listen opens one flow socket, as udpsock.Listen does (network
	// "udp4" or "udp6", the flow's local address, the pool's options);
	// nil means udpsock.Listen. A protocol over another socket type (ICMP
	// echo) opens its own.
	Listen func(network string, laddr netip.AddrPort, o udpsock.Options) (FlowSocket, error)
	// HeaderLen is the octets that the protocol's datagrams carry before
	// the module's packet_size octets of payload (the ICMP echo header):
	// Encode's buf is packet_size + HeaderLen octets long.
	HeaderLen int
	// Start, when set, replaces datagrams on flow sockets: the scheduler
	// calls it to start probe seq of s on flow towards dst (a TCP
	// handshake), and it must return at once and later decide the probe
	// through s.onReply, or leave it to time out.
	Start func(p *pool, s *Session, seq uint32, flow int, dst netip.AddrPort)
	// Open, when set, replaces the flow sockets of a protocol with Start:
	// the pool calls it once per address family (0 IPv4, 1 IPv6) on first
	// use, with the module's source address (unspecified when it sets
	// none), and closes what it returns when the pool closes.
	Open func(p *pool, fam int, src netip.Addr) (flowSet, error)
	// What the protocol's replies can carry besides the probe they
	// answer. The series fed by a part are absent, not 0, for a protocol
	// without it, and for a session until one of its replies has carried
	// it: a reflector may not send it (TWAMP-Light reflectors often return
	// no Sender TTL or Class of Service TLV). Direction needs none of these:
	// it shows once a reflector's sequence numbers differ from ours.
	//
	// ReflectorTimestamps: the reflector's T2 and T3, for its dwell
	// (llama_probe_reflector_dwell_seconds, subtracted from the RTT).
	ReflectorTimestamps bool
	// SenderTTL: the TTL / Hop Limit the probe arrived with, for the
	// forward hop count and its changes.
	SenderTTL bool
	// ClassOfService: the DSCP the reflector received (Class of Service
	// TLV, RFC 8972 §5.2), for DSCP remarking.
	ClassOfService bool
}

// FlowSocket is one flow's socket: a *udpsock.Conn, or what a protocol's
// Listen opens.
type FlowSocket interface {
	// Batch returns the socket's batched I/O.
	Batch() udpsock.BatchConn
	// DrainTxTimestamps reads the queued kernel transmit timestamps, as
	// udpsock.Conn.DrainTxTimestamps does.
	DrainTxTimestamps(f func(key uint32, ts int64), limit int) error
	// InitialTTL returns the TTL / Hop Limit that datagrams leave with.
	InitialTTL() int
	// LocalAddr returns the bound address, a *net.UDPAddr whose port
	// identifies the flow.
	LocalAddr() net.Addr
	// Close closes the socket; a blocked Batch read returns net.ErrClosed.
	Close() error
}

// Probers maps a module's prober name to its protocol, as
// blackbox_exporter's Probers map does. Adding a protocol (see "How to add
// a probe protocol" in docs/architecture.md):
//
//  1. Codec: prober/NAME.go defines its Prober: Spec, New (a Protocol's
//     Encode and Decode), what its replies can carry, and Listen or Start
//     for another socket type or exchange.
//  2. Trace: with Spec.PathTrace, its Protocol also has quotedSeq (the
//     traceQuoter of pathtrace.go), reading a probe's sequence number from
//     the start of its UDP payload as an ICMP error quotes it.
//  3. Register: one entry here.
//  4. Document and test: example.yml, the README; FuzzDecode and
//     FuzzTraceQuote already cover every entry.
var Probers = map[string]*Prober{
	config.ProberSTAMP: &stampProber,
	config.ProberLLAMA: &llamaProber,
	config.ProberICMP:  &icmpProber,
	config.ProberTCP:   &tcpProber,
}

// The configuration learns the protocols, their defaults and their limits
// from the registry.
func init() {
	for name, p := range Probers {
		config.RegisterProber(name, p.Spec)
	}
}

// UnavailableError is Manager.Get's error when a module's prober cannot
// work on this host at all, such as an icmp module where the process may
// open neither ping nor raw sockets. Its message names what is missing;
// the /probe handler answers 500 with it.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }

func (e *UnavailableError) Unwrap() error { return e.Err }
