package prober

import (
	"encoding/binary"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/legacy"
)

// llamaProber probes with the protobuf probes of Dropbox LLAMA, for
// existing LLAMA (or UDProbe) reflectors, which return each probe byte for
// byte. Replies carry no reflector timestamps, TTL or Class of Service.
var llamaProber = Prober{
	Spec: config.ProberSpec{
		DefaultPort:       config.DefaultPortLLAMA,
		UsesPort:          true,
		DefaultPacketSize: config.DefaultPacketSizeLLAMA,
		MinPacketSize:     config.MinPacketSizeLLAMA,
		MaxPacketSize:     config.MaxPacketSize,
		PathTrace:         true,
	},
	New: func(*config.Module) Protocol { return &llamaProtocol{} },
}

// llamaProtocol is one goroutine's legacy LLAMA codec.
type llamaProtocol struct {
	lp legacy.Probe
}

// Encode writes a legacy probe padded to len(buf), its signature carrying
// the SSID and the sequence number, its ToS the module's DSCP, its sent
// time T1 (or now).
func (*llamaProtocol) Encode(buf []byte, p *Probe) ([]byte, error) {
	t1 := p.T1
	if t1 == 0 {
		t1 = time.Now().UnixNano()
	}
	lp := legacy.Probe{TOS: byte(p.DSCP << 2), Sent: uint64(t1)}
	putLegacySignature(&lp.Signature, p.SSID, p.Seq)
	return lp.MarshalTo(buf[:0], len(buf))
}

// Decode reads a returned legacy probe. A probe whose signature is not
// ours is ErrNotOurs.
func (lc *llamaProtocol) Decode(b []byte, r *DecodedReply) error {
	if err := lc.lp.UnmarshalBinary(b); err != nil {
		return err
	}
	ssid, seq, ok := parseLegacySignature(&lc.lp.Signature)
	if !ok {
		return ErrNotOurs
	}
	*r = DecodedReply{SSID: ssid, Seq: seq, ReflectorSeq: seq, T1: int64(lc.lp.Sent), SenderTTL: -1, DSCP2: -1}
	return nil
}

// legacyMarker ends the signature of our legacy probes, telling their
// replies from strays.
var legacyMarker = [4]byte{'L', 'L', 'M', 'A'}

func putLegacySignature(sig *[legacy.SignatureLen]byte, ssid uint16, seq uint32) {
	binary.BigEndian.PutUint16(sig[0:2], ssid)
	binary.BigEndian.PutUint32(sig[2:6], seq)
	copy(sig[6:], legacyMarker[:])
}

// parseLegacySignature returns the SSID and sequence number of one of our
// legacy probes, or ok false.
func parseLegacySignature(sig *[legacy.SignatureLen]byte) (ssid uint16, seq uint32, ok bool) {
	if [4]byte(sig[6:]) != legacyMarker {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(sig[0:2]), binary.BigEndian.Uint32(sig[2:6]), true
}

// quotedSeq reads the sequence number from the signature, the first field
// of our legacy probes: tag, length, then SSID (2) and sequence number (4).
func (*llamaProtocol) quotedSeq(q []byte) (uint32, bool) {
	if len(q) < 8 || q[0] != 0x0a || q[1] != legacy.SignatureLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(q[4:8]), true
}
