package stamp

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Fixed sizes of the unauthenticated STAMP test packets.
const (
	// SenderPacketLen is the minimum length, in octets, of an
	// unauthenticated Session-Sender test packet (RFC 8762 §4.2.1).
	SenderPacketLen = 44
	// ReflectorPacketLen is the minimum length, in octets, of an
	// unauthenticated Session-Reflector test packet (RFC 8762 §4.3.1).
	ReflectorPacketLen = 44
	// MinReflectorReplyLen is the length, in octets, of the shortest
	// Session-Reflector packet that still carries every field a sender needs
	// to time its probe: the header through the Session-Sender Timestamp
	// (RFC 8762 §4.3.1). TWAMP-Light reflectors (RFC 5357 Appendix I) may
	// answer without the Sender TTL and padding; see
	// [ReflectorPacket.UnmarshalPartial].
	MinReflectorReplyLen = 36
)

// Octet offsets of the fields of the unauthenticated packets (RFC 8762
// §4.2.1 and §4.3.1, SSID per RFC 8972 §3). Fields up to the SSID sit at the
// same offsets in the Session-Sender and Session-Reflector packets.
const (
	OffsetSequence            = 0
	OffsetTimestamp           = 4
	OffsetErrorEstimate       = 12
	OffsetSSID                = 14
	OffsetReceiveTimestamp    = 16
	OffsetSenderSequence      = 24
	OffsetSenderTimestamp     = 28
	OffsetSenderErrorEstimate = 36
	OffsetSenderTTL           = 40
)

// ErrTooShort is returned, possibly wrapped (test with errors.Is), by every
// UnmarshalBinary and MarshalTo method of this package when the buffer holds
// fewer octets than the fixed packet length ([SenderPacketLen] or
// [ReflectorPacketLen], RFC 8762 §4.2.1 and §4.3.1), by the authenticated
// variants when it holds fewer than [AuthSenderPacketLen] or
// [AuthReflectorPacketLen] (RFC 8762 §4.2.2 and §4.3.2), and by the TLV
// functions ([NextTLV], [ClassOfService.UnmarshalBinary]) when a TLV is cut
// short (RFC 8972 §4).
var ErrTooShort = errors.New("stamp: buffer too short")

func tooShort(what string, got, need int) error {
	return fmt.Errorf("%w for %s packet: %d octets, need %d", ErrTooShort, what, got, need)
}

var (
	_ encoding.BinaryMarshaler   = (*SenderPacket)(nil)
	_ encoding.BinaryUnmarshaler = (*SenderPacket)(nil)
	_ encoding.BinaryAppender    = (*SenderPacket)(nil)
	_ encoding.BinaryMarshaler   = (*ReflectorPacket)(nil)
	_ encoding.BinaryUnmarshaler = (*ReflectorPacket)(nil)
	_ encoding.BinaryAppender    = (*ReflectorPacket)(nil)
)

// SenderPacket is an unauthenticated STAMP Session-Sender test packet
// (RFC 8762 §4.2.1) with the Session-Sender Identifier of RFC 8972 §3 in
// place of the first two MBZ octets. Wire layout (octet offsets):
//
//	 0 Sequence Number (4)
//	 4 Timestamp (8)
//	12 Error Estimate (2)
//	14 SSID (2)
//	16 MBZ (28)
type SenderPacket struct {
	// Sequence is the Sequence Number (RFC 8762 §4.2.1).
	Sequence uint32
	// Timestamp is T1, the time the sender transmits the packet.
	Timestamp Timestamp
	// ErrorEstimate describes the sender's clock (RFC 8762 §4.2.1).
	ErrorEstimate ErrorEstimate
	// SSID is the Session-Sender Identifier (RFC 8972 §3); 0 when unused.
	SSID uint16
}

// MarshalTo writes the 44-octet Session-Sender packet (RFC 8762 §4.2.1,
// SSID per RFC 8972 §3) into b[0:44], zeroing the MBZ octets, and returns
// the number of octets written, [SenderPacketLen]. It returns 0 and an error
// matching [ErrTooShort] if len(b) < SenderPacketLen. Octets b[44:] are left
// untouched, so padding or TLVs can be written there separately. MarshalTo
// does not allocate and does not check that the Error Estimate is
// [ErrorEstimate.Valid].
func (p *SenderPacket) MarshalTo(b []byte) (int, error) {
	if len(b) < SenderPacketLen {
		return 0, tooShort("sender", len(b), SenderPacketLen)
	}
	b = b[:SenderPacketLen]
	binary.BigEndian.PutUint32(b[0:4], p.Sequence)
	binary.BigEndian.PutUint64(b[4:12], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(b[12:14], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(b[14:16], p.SSID)
	clear(b[16:44])
	return SenderPacketLen, nil
}

// AppendBinary appends the 44-octet Session-Sender packet (RFC 8762
// §4.2.1) to b and returns the extended slice. The error is always nil.
func (p *SenderPacket) AppendBinary(b []byte) ([]byte, error) {
	n := len(b)
	b = append(b, make([]byte, SenderPacketLen)...)
	_, err := p.MarshalTo(b[n:])
	return b, err
}

// MarshalBinary returns the 44-octet Session-Sender packet (RFC 8762
// §4.2.1) in a new slice. The error is always nil.
func (p *SenderPacket) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, SenderPacketLen))
}

// UnmarshalBinary decodes a Session-Sender packet (RFC 8762 §4.2.1, SSID
// per RFC 8972 §3) from b. It returns an error matching [ErrTooShort], and
// leaves p unchanged, if len(b) < [SenderPacketLen]. MBZ octets are ignored
// as RFC 8762 §4.2.1 requires, and octets beyond the first 44 (padding,
// RFC 8972 TLVs) are ignored. UnmarshalBinary does not allocate and does
// not retain b.
func (p *SenderPacket) UnmarshalBinary(b []byte) error {
	if len(b) < SenderPacketLen {
		return tooShort("sender", len(b), SenderPacketLen)
	}
	b = b[:SenderPacketLen]
	p.Sequence = binary.BigEndian.Uint32(b[0:4])
	p.Timestamp = Timestamp(binary.BigEndian.Uint64(b[4:12]))
	p.ErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[12:14]))
	p.SSID = binary.BigEndian.Uint16(b[14:16])
	return nil
}

// ReflectorPacket is an unauthenticated STAMP Session-Reflector test packet
// (RFC 8762 §4.3.1) with the Session-Sender Identifier of RFC 8972 §3 in
// place of the MBZ octets at offset 14. Wire layout (octet offsets):
//
//	 0 Sequence Number (4)
//	 4 Timestamp (8)
//	12 Error Estimate (2)
//	14 SSID (2)
//	16 Receive Timestamp (8)
//	24 Session-Sender Sequence Number (4)
//	28 Session-Sender Timestamp (8)
//	36 Session-Sender Error Estimate (2)
//	38 MBZ (2)
//	40 Session-Sender TTL (1)
//	41 MBZ (3)
type ReflectorPacket struct {
	// Sequence is the reflector's Sequence Number (RFC 8762 §4.3.1).
	Sequence uint32
	// Timestamp is T3, taken just before the reflector transmits.
	Timestamp Timestamp
	// ErrorEstimate describes the reflector's clock (RFC 8762 §4.3.1).
	ErrorEstimate ErrorEstimate
	// SSID is the Session-Sender Identifier (RFC 8972 §3) copied from the
	// sender's packet; 0 when unused.
	SSID uint16
	// ReceiveTimestamp is T2, the time the reflector received the sender's
	// packet.
	ReceiveTimestamp Timestamp
	// SenderSequence is the Sequence Number copied from the sender's packet.
	SenderSequence uint32
	// SenderTimestamp is T1 copied from the sender's packet.
	SenderTimestamp Timestamp
	// SenderErrorEstimate is the Error Estimate copied from the sender's
	// packet.
	SenderErrorEstimate ErrorEstimate
	// SenderTTL is the IPv4 TTL or IPv6 Hop Limit of the received sender's
	// packet (RFC 8762 §4.3.1); 255 when unknown.
	SenderTTL uint8
}

// MarshalTo writes the 44-octet Session-Reflector packet (RFC 8762 §4.3.1,
// SSID per RFC 8972 §3) into b[0:44], zeroing the MBZ octets, and returns
// the number of octets written, [ReflectorPacketLen]. It returns 0 and an
// error matching [ErrTooShort] if len(b) < ReflectorPacketLen. Octets b[44:]
// are left untouched. MarshalTo does not allocate.
func (p *ReflectorPacket) MarshalTo(b []byte) (int, error) {
	if len(b) < ReflectorPacketLen {
		return 0, tooShort("reflector", len(b), ReflectorPacketLen)
	}
	b = b[:ReflectorPacketLen]
	binary.BigEndian.PutUint32(b[0:4], p.Sequence)
	binary.BigEndian.PutUint64(b[4:12], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(b[12:14], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(b[14:16], p.SSID)
	binary.BigEndian.PutUint64(b[16:24], uint64(p.ReceiveTimestamp))
	binary.BigEndian.PutUint32(b[24:28], p.SenderSequence)
	binary.BigEndian.PutUint64(b[28:36], uint64(p.SenderTimestamp))
	binary.BigEndian.PutUint16(b[36:38], uint16(p.SenderErrorEstimate))
	b[38], b[39] = 0, 0
	b[40] = p.SenderTTL
	b[41], b[42], b[43] = 0, 0, 0
	return ReflectorPacketLen, nil
}

// AppendBinary appends the 44-octet Session-Reflector packet (RFC 8762
// §4.3.1) to b and returns the extended slice. The error is always nil.
func (p *ReflectorPacket) AppendBinary(b []byte) ([]byte, error) {
	n := len(b)
	b = append(b, make([]byte, ReflectorPacketLen)...)
	_, err := p.MarshalTo(b[n:])
	return b, err
}

// MarshalBinary returns the 44-octet Session-Reflector packet (RFC 8762
// §4.3.1) in a new slice. The error is always nil.
func (p *ReflectorPacket) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, ReflectorPacketLen))
}

// UnmarshalBinary decodes a Session-Reflector packet (RFC 8762 §4.3.1, SSID
// per RFC 8972 §3) from b. It returns an error matching [ErrTooShort], and
// leaves p unchanged, if len(b) < [ReflectorPacketLen]. MBZ octets are
// ignored as RFC 8762 §4.3.1 requires, and octets beyond the first 44
// (padding, RFC 8972 TLVs) are ignored. UnmarshalBinary does not allocate
// and does not retain b.
func (p *ReflectorPacket) UnmarshalBinary(b []byte) error {
	if len(b) < ReflectorPacketLen {
		return tooShort("reflector", len(b), ReflectorPacketLen)
	}
	b = b[:ReflectorPacketLen]
	p.Sequence = binary.BigEndian.Uint32(b[0:4])
	p.Timestamp = Timestamp(binary.BigEndian.Uint64(b[4:12]))
	p.ErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[12:14]))
	p.SSID = binary.BigEndian.Uint16(b[14:16])
	p.ReceiveTimestamp = Timestamp(binary.BigEndian.Uint64(b[16:24]))
	p.SenderSequence = binary.BigEndian.Uint32(b[24:28])
	p.SenderTimestamp = Timestamp(binary.BigEndian.Uint64(b[28:36]))
	p.SenderErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[36:38]))
	p.SenderTTL = b[40]
	return nil
}

// UnmarshalPartial decodes a Session-Reflector packet (RFC 8762 §4.3.1)
// that may end anywhere from the Session-Sender Timestamp on, as some
// TWAMP-Light reflectors (RFC 5357) answer: at least
// [MinReflectorReplyLen] octets. Fields past the end of b are zero, except
// SenderTTL, which is 255 (unknown) unless b holds it. A packet of
// [ReflectorPacketLen] octets or more decodes as with UnmarshalBinary. It
// returns an error matching [ErrTooShort], and leaves p unchanged, if
// len(b) < MinReflectorReplyLen. It does not allocate or retain b.
func (p *ReflectorPacket) UnmarshalPartial(b []byte) error {
	if len(b) >= ReflectorPacketLen {
		return p.UnmarshalBinary(b)
	}
	if len(b) < MinReflectorReplyLen {
		return tooShort("reflector", len(b), MinReflectorReplyLen)
	}
	var full [ReflectorPacketLen]byte
	full[OffsetSenderTTL] = 255 // unknown, unless b reaches it
	copy(full[:], b)
	return p.UnmarshalBinary(full[:])
}

// Dwell returns the time the packet spent inside the reflector, T3 - T2
// (Timestamp minus ReceiveTimestamp, RFC 8762 §4.3.1). The reflector's
// Error Estimate says the timestamps' format (its Z bit, RFC 8762
// §4.2.1): NTP, computed with [Timestamp.Sub], or PTPv2 truncated, with
// [PTPSub]. A negative difference (for example from a clock step between T2
// and T3) is returned as 0.
func (p *ReflectorPacket) Dwell() time.Duration {
	d := p.Timestamp.Sub(p.ReceiveTimestamp)
	if p.ErrorEstimate.PTP() {
		d = PTPSub(uint64(p.Timestamp), uint64(p.ReceiveTimestamp))
	}
	if d < 0 {
		return 0
	}
	return d
}

// DwellOK is Dwell for a reply that may carry timestamps it cannot use: it
// returns T3 - T2 and true, or 0 and false when T2 or T3 is zero (a
// reflector that does not take it), T3 is before T2 (some reflectors swap
// them), or, in PTP format, a nanoseconds field is 10^9 or more (an NTP
// fraction that was not converted). It does not allocate.
func (p *ReflectorPacket) DwellOK() (time.Duration, bool) {
	t2, t3 := uint64(p.ReceiveTimestamp), uint64(p.Timestamp)
	if t2 == 0 || t3 == 0 {
		return 0, false
	}
	if p.ErrorEstimate.PTP() && (uint32(t2) >= 1e9 || uint32(t3) >= 1e9) {
		return 0, false
	}
	d := p.Timestamp.Sub(p.ReceiveTimestamp)
	if p.ErrorEstimate.PTP() {
		d = PTPSub(t3, t2)
	}
	if d < 0 {
		return 0, false
	}
	return d, true
}
