package stamp

// ClassOfServiceLen is the length, in octets, of the Value of a Class of
// Service TLV (RFC 8972 §4.4: "Length ... set equal to the value 4").
const ClassOfServiceLen = 4

// Values of the RP (Reverse Path) field of the Class of Service TLV
// (RFC 8972 §4.4). Values 2 and 3 are not defined by RFC 8972.
const (
	// CoSRPDefault is the RP value a Session-Sender MUST send; a
	// Session-Reflector leaves it at 0 when local policy allowed it to
	// mark the reflected packet with DSCP1.
	CoSRPDefault uint8 = 0
	// CoSRPRejected is the RP value a Session-Reflector sets when local
	// policy did not permit DSCP1, in which case it used the DSCP of the
	// received packet for the reflected packet instead.
	CoSRPRejected uint8 = 1
)

var (
	errCoSShort = &wireError{
		msg:   "stamp: malformed TLV: Class of Service value shorter than 4 octets",
		short: true, malformed: true,
	}
	errCoSLong = &wireError{
		msg:       "stamp: malformed TLV: Class of Service value longer than 4 octets",
		malformed: true,
	}
	errCoSBuf = &wireError{
		msg:   "stamp: buffer too short for Class of Service value: need 4 octets",
		short: true,
	}
	errCoSRange = &wireError{
		msg:   "stamp: field value out of range: Class of Service DSCP1/DSCP2 must be < 64, ECN and RP < 4",
		other: ErrFieldRange,
	}
)

// ClassOfService is the 4-octet Value of the Class of Service TLV
// ([TLVClassOfService], RFC 8972 §4.4). Bit layout (bit 0 is the most
// significant bit of the first octet):
//
//	bits  0..5   DSCP1    (6 bits)
//	bits  6..11  DSCP2    (6 bits)
//	bits 12..13  ECN      (2 bits)
//	bits 14..15  RP       (2 bits)
//	bits 16..31  Reserved (16 bits, zero on transmission, ignored on receipt)
//
// The Session-Sender fills DSCP1 and sends DSCP2, ECN and RP as 0. The
// Session-Reflector copies the TLV into the reflected packet, setting DSCP2
// and ECN to the DSCP and ECN of the IP header of the packet it received
// (ECN per RFC 8972 erratum 8199), and RP to [CoSRPRejected] if it could
// not use DSCP1 for the reflected packet.
//
// Later work in the IETF (draft-ietf-ippm-stamp-cos-ecn) assigns some of the
// Reserved bits; this type writes them as zero and ignores them, as RFC 8972
// requires, which keeps it interoperable with both.
type ClassOfService struct {
	// DSCP1 is the DSCP (0..63) the Session-Sender asks the
	// Session-Reflector to use in the IP header of the reflected packet.
	DSCP1 uint8
	// DSCP2 is the DSCP (0..63) the Session-Reflector found in the IP
	// header of the packet it received; 0 from the Session-Sender.
	DSCP2 uint8
	// ECN is the ECN codepoint (0..3) the Session-Reflector found in the IP
	// header of the packet it received; 0 from the Session-Sender.
	ECN uint8
	// RP is the Reverse Path field (0..3): [CoSRPDefault] or
	// [CoSRPRejected].
	RP uint8
}

// MarshalTo writes the 4-octet Class of Service TLV Value (RFC 8972 §4.4)
// into b[0:4], with the Reserved octets zero, and returns
// [ClassOfServiceLen]. It writes nothing and returns 0 and an error
// matching [ErrTooShort] if len(b) < 4, or [ErrFieldRange] if DSCP1 or
// DSCP2 is above 63 or ECN or RP above 3. Octets b[4:] are left untouched.
// The TLV header is not written; use [AppendTLV] with [TLVClassOfService].
// MarshalTo does not allocate.
func (c *ClassOfService) MarshalTo(b []byte) (int, error) {
	if len(b) < ClassOfServiceLen {
		return 0, errCoSBuf
	}
	if c.DSCP1 > 63 || c.DSCP2 > 63 || c.ECN > 3 || c.RP > 3 {
		return 0, errCoSRange
	}
	b = b[:ClassOfServiceLen]
	b[0] = c.DSCP1<<2 | c.DSCP2>>4
	b[1] = c.DSCP2<<4 | c.ECN<<2 | c.RP
	b[2], b[3] = 0, 0
	return ClassOfServiceLen, nil
}

// UnmarshalBinary decodes a Class of Service TLV Value (RFC 8972 §4.4),
// typically [TLV].Value of a TLV of type [TLVClassOfService]. The value
// must be exactly 4 octets: a shorter one gives an error matching both
// [ErrTooShort] and [ErrMalformedTLV], a longer one an error matching
// [ErrMalformedTLV] (the Length is invalid for the Type, RFC 8972 §4); in
// both cases c is left unchanged. The Reserved octets are ignored.
// UnmarshalBinary does not allocate and does not retain b.
func (c *ClassOfService) UnmarshalBinary(b []byte) error {
	switch {
	case len(b) < ClassOfServiceLen:
		return errCoSShort
	case len(b) > ClassOfServiceLen:
		return errCoSLong
	}
	c.DSCP1 = b[0] >> 2
	c.DSCP2 = (b[0]&0x03)<<4 | b[1]>>4
	c.ECN = (b[1] >> 2) & 0x03
	c.RP = b[1] & 0x03
	return nil
}
