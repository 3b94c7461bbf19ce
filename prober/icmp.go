package prober

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/icmpsock"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// Sizes of ICMP echo messages (RFC 792; RFC 4443 §4.1), in octets.
const (
	// icmpHeaderLen is the echo header: Type, Code, Checksum,
	// Identifier, Sequence Number.
	icmpHeaderLen = 8
	// icmpMinData is the echo data that matching needs: a magic, the
	// session's SSID and the 32-bit sequence number. It is the minimum
	// packet_size of icmp modules.
	icmpMinData = 10
	// icmpDefaultData is the default packet_size, ping's default.
	icmpDefaultData = 56
)

// icmpMagic starts the echo data of our probes, telling their replies from
// those of other pings.
var icmpMagic = [4]byte{'L', 'L', 'M', 'I'}

// icmpProber probes with ICMP Echo Requests (RFC 792) and ICMPv6 Echo
// Requests (RFC 4443 §4.1), which any host answers without a reflector.
// packet_size is the echo data, as ping's -s. Each flow socket has its own
// Identifier; replies carry no reflector timestamps, TTL or Class of
// Service, so sessions have no dwell, direction, hop or remarking series.
var icmpProber = Prober{
	Spec: config.ProberSpec{
		UsesPort:          false,
		DefaultPacketSize: icmpDefaultData,
		MinPacketSize:     icmpMinData,
		MaxPacketSize:     config.MaxPacketSize,
	},
	New:       func(m *config.Module) Protocol { return &icmpProtocol{flows: uint32(m.Flows), flow: -1} },
	Listen:    listenICMP,
	HeaderLen: icmpHeaderLen,
}

// listenICMP opens a flow socket of echo requests (see icmpsock.Listen).
func listenICMP(network string, laddr netip.AddrPort, o udpsock.Options) (FlowSocket, error) {
	c, err := icmpsock.Listen(network, laddr, o)
	var none *icmpsock.NoSocketError
	if errors.As(err, &none) {
		return nil, &UnavailableError{err}
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// flowBound is a Protocol whose replies must come back on the flow socket
// their probe left from. Each receive loop tells its own decoder which
// flow, of which port, it reads.
type flowBound interface {
	bindFlow(flow int, port uint16)
}

// icmpProtocol is one goroutine's echo codec. The socket sets the
// Identifier and the checksum of the requests.
type icmpProtocol struct {
	flows uint32
	flow  int    // the receive loop's flow; -1 when not bound
	ident uint16 // its Identifier
}

func (ip *icmpProtocol) bindFlow(flow int, port uint16) { ip.flow, ip.ident = flow, port }

// Encode writes an Echo Request whose Sequence Number is the low 16 bits of
// the probe's and whose data is the magic, the SSID, the full sequence
// number and zeros to the module's packet_size.
func (*icmpProtocol) Encode(buf []byte, p *Probe) ([]byte, error) {
	typ := byte(ipv4.ICMPTypeEcho)
	if p.IPv6 {
		typ = byte(ipv6.ICMPTypeEchoRequest)
	}
	buf[0], buf[1] = typ, 0
	clear(buf[2:6]) // Checksum, Identifier: the socket's
	binary.BigEndian.PutUint16(buf[6:8], uint16(p.Seq))
	d := buf[icmpHeaderLen:]
	copy(d, icmpMagic[:])
	binary.BigEndian.PutUint16(d[4:6], p.SSID)
	binary.BigEndian.PutUint32(d[6:10], p.Seq)
	clear(d[icmpMinData:])
	return buf, nil
}

// Errors of icmpProtocol.Decode for bad data.
var (
	errICMPShort    = errors.New("icmp: shorter than an echo header")
	errICMPCode     = errors.New("icmp: echo reply with a code other than 0")
	errICMPSequence = errors.New("icmp: Sequence Number is not the low 16 bits of the data's")
)

// Decode reads an Echo Reply (RFC 792; RFC 4443 §4.2) to one of our
// probes. Other ICMP messages, replies to other pings (no magic) and
// replies that came back on another flow than their probe's (another
// Identifier) are ErrNotOurs; a message shorter than the echo header, a
// reply with a Code other than 0 or whose Sequence Number is not the low 16
// bits of the one in its data is bad data.
func (ip *icmpProtocol) Decode(b []byte, r *DecodedReply) error {
	if len(b) < icmpHeaderLen {
		return errICMPShort
	}
	if t := b[0]; t != byte(ipv4.ICMPTypeEchoReply) && t != byte(ipv6.ICMPTypeEchoReply) {
		return ErrNotOurs
	}
	if b[1] != 0 {
		return errICMPCode
	}
	d := b[icmpHeaderLen:]
	if len(d) < icmpMinData || [4]byte(d[:4]) != icmpMagic {
		return ErrNotOurs
	}
	seq := binary.BigEndian.Uint32(d[6:10])
	if binary.BigEndian.Uint16(b[6:8]) != uint16(seq) {
		return errICMPSequence
	}
	if ip.flow >= 0 && (binary.BigEndian.Uint16(b[4:6]) != ip.ident || seq%ip.flows != uint32(ip.flow)) {
		return ErrNotOurs
	}
	*r = DecodedReply{SSID: binary.BigEndian.Uint16(d[4:6]), Seq: seq, ReflectorSeq: seq, SenderTTL: -1, DSCP2: -1}
	return nil
}
