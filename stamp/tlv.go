package stamp

import (
	"encoding/binary"
	"errors"
)

// TLVHeaderLen is the length, in octets, of the header that precedes the
// Value of every STAMP TLV (RFC 8972 §4): STAMP TLV Flags (1 octet), Type
// (1 octet) and Length (2 octets).
const TLVHeaderLen = 4

// MaxTLVValueLen is the largest Value, in octets, that the 16-bit Length
// field of a STAMP TLV header can describe (RFC 8972 §4).
const MaxTLVValueLen = 0xffff

// STAMP TLV Flags (RFC 8972 §4; IANA "STAMP TLV Flags" registry, RFC 8972
// §5.2, where bit 0 is the most significant bit of the octet). The other
// five bits are reserved: zero on transmission, ignored on receipt.
const (
	// TLVFlagU is the U (Unrecognized) flag. A Session-Sender sets it to 1
	// on every TLV it sends; a Session-Reflector sets it to 1 on a TLV whose
	// Type it does not understand and to 0 otherwise.
	TLVFlagU uint8 = 0x80
	// TLVFlagM is the M (Malformed) flag. A Session-Sender sets it to 0; a
	// Session-Reflector sets it to 1 when the Length is invalid for the Type
	// or runs past the end of the packet.
	TLVFlagM uint8 = 0x40
	// TLVFlagI is the I (Integrity failed) flag. A Session-Sender sets it
	// to 0; a Session-Reflector sets it to 1 on every TLV when HMAC
	// verification of the extensions fails (RFC 8972 §4.8).
	TLVFlagI uint8 = 0x20
)

// STAMP TLV Types (IANA "STAMP TLV Types" registry, RFC 8972 §5.1). Type 0
// and 255 are reserved; 240-251 are for experimental and 252-254 for
// private use.
const (
	// TLVExtraPadding is the Extra Padding TLV (RFC 8972 §4.1).
	TLVExtraPadding uint8 = 1
	// TLVLocation is the Location TLV (RFC 8972 §4.2).
	TLVLocation uint8 = 2
	// TLVTimestampInfo is the Timestamp Information TLV (RFC 8972 §4.3).
	TLVTimestampInfo uint8 = 3
	// TLVClassOfService is the Class of Service TLV (RFC 8972 §4.4); its
	// 4-octet Value is encoded by [ClassOfService].
	TLVClassOfService uint8 = 4
	// TLVDirectMeasurement is the Direct Measurement TLV (RFC 8972 §4.5).
	TLVDirectMeasurement uint8 = 5
	// TLVAccessReport is the Access Report TLV (RFC 8972 §4.6).
	TLVAccessReport uint8 = 6
	// TLVFollowUpTelemetry is the Follow-Up Telemetry TLV (RFC 8972 §4.7).
	TLVFollowUpTelemetry uint8 = 7
	// TLVHMAC is the HMAC TLV (RFC 8972 §4.8).
	TLVHMAC uint8 = 8
)

// ErrMalformedTLV is returned, possibly wrapped (test with errors.Is), when
// a STAMP TLV is malformed in the sense of RFC 8972 §4: its header or Value
// runs past the end of the buffer, or its Length is not valid for its Type
// (for example a Class of Service Value that is not 4 octets, RFC 8972
// §4.4). A receiver that finds such a TLV sets [TLVFlagM] and stops
// processing the remaining TLVs.
var ErrMalformedTLV = errors.New("stamp: malformed TLV")

// ErrFieldRange is returned, possibly wrapped (test with errors.Is), by
// encoders when a struct field holds a value too large for its wire field,
// for example a DSCP above 63 for the 6-bit DSCP fields of the Class of
// Service TLV (RFC 8972 §4.4, [ClassOfService.MarshalTo]).
var ErrFieldRange = errors.New("stamp: field value out of range")

// wireError is an error that matches ErrTooShort and, optionally,
// ErrMalformedTLV. The values below are allocated once so that the
// allocation-free functions stay allocation-free on their error paths too.
type wireError struct {
	msg       string
	short     bool
	malformed bool
	other     error
}

func (e *wireError) Error() string { return e.msg }

func (e *wireError) Is(target error) bool {
	switch target {
	case ErrTooShort:
		return e.short
	case ErrMalformedTLV:
		return e.malformed
	case nil:
		return false
	}
	return target == e.other
}

var (
	errNoTLV = &wireError{
		msg:   "stamp: buffer too short: no TLV left",
		short: true,
	}
	errTLVHeader = &wireError{
		msg:   "stamp: malformed TLV: fewer than 4 octets left for the TLV header",
		short: true, malformed: true,
	}
	errTLVValue = &wireError{
		msg:   "stamp: malformed TLV: Length runs past the end of the buffer",
		short: true, malformed: true,
	}
)

// TLV is one STAMP TLV (RFC 8972 §4) as found in a packet.
//
// On the wire a TLV is the STAMP TLV Flags octet, the Type octet, a
// big-endian 2-octet Length giving the length of the Value in octets (the
// 4-octet header is not counted), and the Value. In unauthenticated mode the
// TLVs start right after the 44-octet base packet ([SenderPacketLen],
// [ReflectorPacketLen]); in authenticated mode right after the 112-octet
// base packet ([AuthSenderPacketLen], [AuthReflectorPacketLen]).
type TLV struct {
	// Flags is the STAMP TLV Flags octet: [TLVFlagU], [TLVFlagM],
	// [TLVFlagI] and five reserved bits, exactly as on the wire.
	Flags uint8
	// Type is the TLV Type, e.g. [TLVClassOfService].
	Type uint8
	// Value is the Value field; len(Value) is the Length field. A TLV
	// returned by [NextTLV] or [FindTLV] aliases the buffer it was parsed
	// from: it is valid only as long as that buffer is, and writes through
	// it modify the packet.
	Value []byte
}

// Len returns the length of t on the wire in octets: [TLVHeaderLen] plus
// len(t.Value).
func (t TLV) Len() int { return TLVHeaderLen + len(t.Value) }

// Unrecognized reports whether the U flag ([TLVFlagU], RFC 8972 §4) is set.
func (t TLV) Unrecognized() bool { return t.Flags&TLVFlagU != 0 }

// Malformed reports whether the M flag ([TLVFlagM], RFC 8972 §4) is set.
func (t TLV) Malformed() bool { return t.Flags&TLVFlagM != 0 }

// IntegrityFailed reports whether the I flag ([TLVFlagI], RFC 8972 §4) is
// set.
func (t TLV) IntegrityFailed() bool { return t.Flags&TLVFlagI != 0 }

// NextTLV parses the STAMP TLV (RFC 8972 §4) at the start of b and returns
// it together with the octets that follow it. t.Value aliases b; nothing is
// copied and NextTLV does not allocate, even when it fails.
//
// Iterate over the TLV area of a packet with
//
//	for rest := pkt[stamp.SenderPacketLen:]; len(rest) > 0; {
//		var t stamp.TLV
//		t, rest, err = stamp.NextTLV(rest)
//		if err != nil { ... } // malformed: stop processing (RFC 8972 §4)
//		...
//	}
//
// Every error matches [ErrTooShort] (test with errors.Is):
//   - len(b) == 0: there is no TLV left; the error does not match
//     [ErrMalformedTLV].
//   - 0 < len(b) < [TLVHeaderLen], or the Length field exceeds
//     len(b)-TLVHeaderLen: the TLV is truncated, which RFC 8972 §4 calls
//     malformed, so the error also matches [ErrMalformedTLV].
//
// On error t is the zero TLV and rest is b. NextTLV neither checks the flags
// nor validates the Length against the Type.
func NextTLV(b []byte) (t TLV, rest []byte, err error) {
	if len(b) < TLVHeaderLen {
		if len(b) == 0 {
			return TLV{}, b, errNoTLV
		}
		return TLV{}, b, errTLVHeader
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b)-TLVHeaderLen {
		return TLV{}, b, errTLVValue
	}
	end := TLVHeaderLen + n
	// Cap the Value so that appending to it cannot overwrite the next TLV.
	t = TLV{Flags: b[0], Type: b[1], Value: b[TLVHeaderLen:end:end]}
	return t, b[end:], nil
}

// AppendTLV appends one STAMP TLV (RFC 8972 §4) to b: flags (the STAMP TLV
// Flags octet, e.g. [TLVFlagU] as a Session-Sender must send), typ, the
// big-endian length of value in octets, and value. It returns the extended
// slice and does not allocate when cap(b) has room for [TLVHeaderLen] +
// len(value) more octets.
//
// AppendTLV panics if len(value) > [MaxTLVValueLen] (65535 octets), which
// the Length field cannot express and which no UDP datagram could carry.
func AppendTLV(b []byte, flags, typ uint8, value []byte) []byte {
	if len(value) > MaxTLVValueLen {
		panic("stamp: AppendTLV: value longer than 65535 octets")
	}
	n := len(value)
	b = append(b, flags, typ, byte(n>>8), byte(n))
	return append(b, value...)
}

// FindTLV returns the first TLV of type typ in tlvs, a packet's TLV area
// (the octets after the base packet, RFC 8972 §4), and true; or the zero
// TLV and false if the well-formed TLVs that precede the first malformed
// one (see [NextTLV]) contain none of that type. The result is exactly what
// iterating with NextTLV and stopping at the first match or error would
// give. The returned Value aliases tlvs. FindTLV does not inspect the
// flags and does not allocate.
func FindTLV(tlvs []byte, typ uint8) (TLV, bool) {
	for len(tlvs) > 0 {
		t, rest, err := NextTLV(tlvs)
		if err != nil {
			break
		}
		if t.Type == typ {
			return t, true
		}
		tlvs = rest
	}
	return TLV{}, false
}
