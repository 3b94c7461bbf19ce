package prober

import (
	"encoding/binary"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/clockstatus"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// stampProber probes with STAMP test packets (RFC 8762, SSID and TLVs of
// RFC 8972), unauthenticated or authenticated. Its replies may come from
// our reflector or from any STAMP or TWAMP-Light reflector, whose quirks it
// accepts (see stampProtocol.Decode).
var stampProber = Prober{
	Spec: config.ProberSpec{
		DefaultPort:       config.DefaultPortSTAMP,
		UsesPort:          true,
		DefaultPacketSize: config.MinPacketSizeSTAMP,
		MinPacketSize:     config.MinPacketSizeSTAMP,
		MaxPacketSize:     config.MaxPacketSize,
		MinPacketSizeAuth: config.MinPacketSizeAuth,
		PathTrace:         true,
	},
	ReflectorTimestamps: true,
	SenderTTL:           true,
	ClassOfService:      true,
	New: func(m *config.Module) Protocol {
		p := &stampProtocol{base: stamp.ReflectorPacketLen}
		if m.AuthKey != nil {
			p.auth, p.base = stamp.NewAuthenticator(m.AuthKey), stamp.AuthReflectorPacketLen
		}
		return p
	},
}

// stampProtocol is one goroutine's STAMP codec.
type stampProtocol struct {
	auth *stamp.Authenticator // nil in unauthenticated mode
	base int                  // octets of the base reflector packet, before TLVs
	rp   stamp.ReflectorPacket
}

// Encode writes a Session-Sender packet (RFC 8762 §4.2.1 or §4.2.2) with
// T1 on the wall clock, where the RFC asks for it (p.T1, or now), and fills the rest with
// a Class of Service TLV and Extra Padding (RFC 8972 §4). buf is at least
// the base packet: configuration enforces it.
func (sp *stampProtocol) Encode(buf []byte, p *Probe) ([]byte, error) {
	t1 := time.Now()
	if p.T1 != 0 {
		t1 = time.Unix(0, p.T1)
	}
	pkt := stamp.SenderPacket{
		Sequence:      p.Seq,
		Timestamp:     stamp.NewTimestamp(t1),
		ErrorEstimate: clockstatus.ErrorEstimate(), // what the kernel's clock discipline says (RFC 8762 §4.1.1)
		SSID:          p.SSID,
	}
	if sp.auth != nil {
		if _, err := pkt.MarshalAuthWith(buf, sp.auth); err != nil {
			return nil, err
		}
		appendTLVs(buf[stamp.AuthSenderPacketLen:], p.DSCP)
		return buf, nil
	}
	if _, err := pkt.MarshalTo(buf); err != nil {
		return nil, err
	}
	appendTLVs(buf[stamp.SenderPacketLen:], p.DSCP)
	return buf, nil
}

// Decode reads a Session-Reflector packet (RFC 8762 §4.3). As STAMP and
// TWAMP-Light reflectors really answer, it accepts an unauthenticated
// reply cut after the Session-Sender Timestamp (then the Sender TTL is
// unknown), timestamps in NTP or PTP format (the Z bit), SSID 0, and a
// reflector sequence number copied from the probe or counted per session.
// An authenticated reply must be whole and carry a valid HMAC.
func (sp *stampProtocol) Decode(b []byte, r *DecodedReply) error {
	rp := &sp.rp
	var err error
	if sp.auth != nil {
		err = rp.UnmarshalAuthWith(b, sp.auth)
	} else {
		err = rp.UnmarshalPartial(b)
	}
	if err != nil {
		return err
	}
	*r = DecodedReply{SSID: rp.SSID, Seq: rp.SenderSequence, ReflectorSeq: rp.Sequence,
		T1: rp.SenderTimestamp.Time().UnixNano(), Stamps: StampsInvalid, SenderTTL: -1, DSCP2: -1}
	if d, ok := rp.DwellOK(); ok {
		r.Stamps, r.Dwell = StampsUsable, d
	}
	if rp.SenderTTL != 255 {
		r.SenderTTL = int(rp.SenderTTL)
	}
	if len(b) > sp.base {
		r.DSCP2 = receivedDSCP(b[sp.base:])
	}
	return nil
}

// cosTLVLen is the octets of a Class of Service TLV (RFC 8972 §4.4).
const cosTLVLen = stamp.TLVHeaderLen + stamp.ClassOfServiceLen

// appendTLVs fills rest, the octets after the base packet, when there is
// room: a Class of Service TLV asking the reflector to answer with dscp and
// to say which DSCP it received, then Extra Padding (RFC 8972 §4.1) to the
// end. Senders set the U flag; reflectors clear it on TLVs they understand.
func appendTLVs(rest []byte, dscp int) {
	if len(rest) < cosTLVLen {
		clear(rest)
		return
	}
	var v [stamp.ClassOfServiceLen]byte
	cos := stamp.ClassOfService{DSCP1: uint8(dscp)}
	cos.MarshalTo(v[:])
	stamp.AppendTLV(rest[:0], stamp.TLVFlagU, stamp.TLVClassOfService, v[:])
	pad := rest[cosTLVLen:]
	clear(pad)
	if len(pad) >= stamp.TLVHeaderLen {
		stamp.AppendTLV(pad[:0], stamp.TLVFlagU, stamp.TLVExtraPadding, pad[stamp.TLVHeaderLen:])
	}
}

// receivedDSCP returns the DSCP that the reflector reports it received, from
// the Class of Service TLV (RFC 8972 §5.2) of a reply's TLV area; -1 when
// the reply carries none.
func receivedDSCP(tlvs []byte) int {
	t, ok := stamp.FindTLV(tlvs, stamp.TLVClassOfService)
	if !ok || t.Unrecognized() {
		return -1
	}
	var cos stamp.ClassOfService
	if cos.UnmarshalBinary(t.Value) != nil {
		return -1
	}
	return int(cos.DSCP2)
}

// quotedSeq reads the Sequence Number that starts every STAMP
// Session-Sender packet (RFC 8762 §4.2.1, §4.2.2).
func (*stampProtocol) quotedSeq(q []byte) (uint32, bool) {
	if len(q) < 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(q), true
}
