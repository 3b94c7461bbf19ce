package stamp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
)

// Fixed sizes of the authenticated STAMP test packets.
const (
	// AuthSenderPacketLen is the minimum length, in octets, of an
	// authenticated Session-Sender test packet (RFC 8762 §4.2.2).
	AuthSenderPacketLen = 112
	// AuthReflectorPacketLen is the minimum length, in octets, of an
	// authenticated Session-Reflector test packet (RFC 8762 §4.3.2).
	AuthReflectorPacketLen = 112
	// HMACLen is the length, in octets, of the HMAC field: HMAC-SHA-256
	// truncated to 128 bits (RFC 8762 §4.4).
	HMACLen = 16
	// AuthHMACOffset is the octet offset of the HMAC field in both
	// authenticated packets. The HMAC covers octets [0, AuthHMACOffset),
	// "the first six blocks (96 octets)" (RFC 8762 §4.4); TLVs after the
	// base packet are not covered (RFC 8972 §4.8 defines an HMAC TLV for
	// them).
	AuthHMACOffset = 96
	// AuthOffsetTimestamp is the octet offset of the Timestamp field (T1
	// or T3) in both authenticated packets, after the Sequence Number and
	// 12 MBZ octets (RFC 8762 §4.2.2 and §4.3.2).
	AuthOffsetTimestamp = 16
)

// ErrBadHMAC is returned by [Authenticator.Verify] and the UnmarshalAuth
// methods when the HMAC field of an authenticated packet does not match the
// HMAC-SHA-256 (truncated to 16 octets) computed with the key over the first
// 96 octets (RFC 8762 §4.4): the packet was altered or the key differs.
var ErrBadHMAC = errors.New("stamp: HMAC verification failed")

var (
	errAuthShort = &wireError{
		msg:   "stamp: buffer too short for authenticated packet: need 112 octets",
		short: true,
	}
	errAuthSenderShort = &wireError{
		msg:   "stamp: buffer too short for authenticated sender packet: need 112 octets",
		short: true,
	}
	errAuthReflectorShort = &wireError{
		msg:   "stamp: buffer too short for authenticated reflector packet: need 112 octets",
		short: true,
	}
)

// Authenticator computes and checks the HMAC of authenticated STAMP packets
// (RFC 8762 §4.4): HMAC-SHA-256 keyed with a secret shared out of band,
// computed over octets 0..95 of the base packet and truncated to its first
// 16 octets, which occupy octets 96..111. Sender and reflector packets use
// the same construction, so one Authenticator serves both.
//
// An Authenticator keeps one HMAC state and reuses it, so [Authenticator.Seal]
// and [Authenticator.Verify] do not allocate. It is not safe for concurrent
// use; give each goroutine its own.
type Authenticator struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewAuthenticator returns an [Authenticator] for the HMAC key key (any
// length; RFC 8762 §4.4 leaves key management and distribution out of
// scope). The key is copied into the HMAC state; the caller may reuse the
// slice. NewAuthenticator allocates; the returned Authenticator does not.
func NewAuthenticator(key []byte) *Authenticator {
	a := &Authenticator{mac: hmac.New(sha256.New, key)}
	// Let crypto/hmac cache its precomputed pads now rather than on the
	// first packet.
	a.mac.Reset()
	return a
}

// mac16 returns the truncated HMAC of pkt[:AuthHMACOffset]. The result
// aliases a.sum and is valid until the next call. len(pkt) >=
// AuthHMACOffset is the caller's responsibility.
func (a *Authenticator) mac16(pkt []byte) []byte {
	a.mac.Reset()
	a.mac.Write(pkt[:AuthHMACOffset])
	return a.mac.Sum(a.sum[:0])[:HMACLen]
}

// Seal computes the HMAC over pkt[0:96] of an authenticated packet (RFC
// 8762 §4.4, [AuthHMACOffset]) and writes it into pkt[96:112]. It returns an
// error matching [ErrTooShort], and changes nothing, if len(pkt) <
// [AuthSenderPacketLen] (112 octets). Octets pkt[112:] are neither read nor
// written. Seal does not allocate.
func (a *Authenticator) Seal(pkt []byte) error {
	if len(pkt) < AuthSenderPacketLen {
		return errAuthShort
	}
	copy(pkt[AuthHMACOffset:AuthSenderPacketLen], a.mac16(pkt))
	return nil
}

// Verify checks the HMAC field pkt[96:112] of an authenticated packet
// against the HMAC computed over pkt[0:96] (RFC 8762 §4.4), comparing in
// constant time. It returns nil if they match, [ErrBadHMAC] if not, and an
// error matching [ErrTooShort] if len(pkt) < [AuthSenderPacketLen] (112
// octets). Octets pkt[112:] are ignored. Verify does not allocate.
func (a *Authenticator) Verify(pkt []byte) error {
	if len(pkt) < AuthSenderPacketLen {
		return errAuthShort
	}
	if !hmac.Equal(a.mac16(pkt), pkt[AuthHMACOffset:AuthSenderPacketLen]) {
		return ErrBadHMAC
	}
	return nil
}

// Authenticated Session-Sender packet (RFC 8762 §4.2.2, SSID per RFC 8972
// §3), octet offsets:
//
//	 0 Sequence Number (4)
//	 4 MBZ (12)
//	16 Timestamp (8)
//	24 Error Estimate (2)
//	26 SSID (2)
//	28 MBZ (68)
//	96 HMAC (16)
func (p *SenderPacket) putAuth(b []byte) {
	b = b[:AuthHMACOffset]
	binary.BigEndian.PutUint32(b[0:4], p.Sequence)
	clear(b[4:16])
	binary.BigEndian.PutUint64(b[16:24], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(b[24:26], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(b[26:28], p.SSID)
	clear(b[28:96])
}

func (p *SenderPacket) getAuth(b []byte) {
	p.Sequence = binary.BigEndian.Uint32(b[0:4])
	p.Timestamp = Timestamp(binary.BigEndian.Uint64(b[16:24]))
	p.ErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[24:26]))
	p.SSID = binary.BigEndian.Uint16(b[26:28])
}

// MarshalAuthTo writes the 112-octet authenticated Session-Sender packet
// (RFC 8762 §4.2.2, SSID per RFC 8972 §3) into b[0:112] and returns
// [AuthSenderPacketLen]. Layout (octet offsets): Sequence Number at 0, MBZ
// (12) at 4, Timestamp at 16, Error Estimate at 24, SSID at 26, MBZ (68) at
// 28, and at 96 the HMAC (16 octets) computed with key as described at
// [Authenticator]. MBZ octets are written as zero; b[112:] (TLVs) is left
// untouched. It returns 0 and an error matching [ErrTooShort], writing
// nothing, if len(b) < AuthSenderPacketLen.
//
// MarshalAuthTo allocates the HMAC state for key on every call; use
// [SenderPacket.MarshalAuthWith] with a reused [Authenticator] to avoid
// that.
func (p *SenderPacket) MarshalAuthTo(b []byte, key []byte) (int, error) {
	if len(b) < AuthSenderPacketLen {
		return 0, errAuthSenderShort
	}
	return p.MarshalAuthWith(b, NewAuthenticator(key))
}

// MarshalAuthWith is [SenderPacket.MarshalAuthTo] with the HMAC computed
// by a (which must not be nil) instead of a fresh key. It does not
// allocate.
func (p *SenderPacket) MarshalAuthWith(b []byte, a *Authenticator) (int, error) {
	if len(b) < AuthSenderPacketLen {
		return 0, errAuthSenderShort
	}
	p.putAuth(b)
	if err := a.Seal(b); err != nil {
		return 0, err
	}
	return AuthSenderPacketLen, nil
}

// UnmarshalAuth verifies and decodes an authenticated Session-Sender packet
// (RFC 8762 §4.2.2, SSID per RFC 8972 §3; layout at
// [SenderPacket.MarshalAuthTo]) from b. The HMAC is verified with key
// before any field is used, as RFC 8762 §4.4 requires. It returns an error
// matching [ErrTooShort] if len(b) < [AuthSenderPacketLen] (112 octets) and
// [ErrBadHMAC] if the HMAC does not match; in both cases p is left
// unchanged. MBZ octets are ignored on receipt (they are covered by the
// HMAC), and b[112:] (TLVs) is ignored. UnmarshalAuth does not retain b; it
// allocates the HMAC state for key (see [SenderPacket.UnmarshalAuthWith]).
func (p *SenderPacket) UnmarshalAuth(b []byte, key []byte) error {
	if len(b) < AuthSenderPacketLen {
		return errAuthSenderShort
	}
	return p.UnmarshalAuthWith(b, NewAuthenticator(key))
}

// UnmarshalAuthWith is [SenderPacket.UnmarshalAuth] with the HMAC checked
// by a (which must not be nil) instead of a fresh key. It does not
// allocate.
func (p *SenderPacket) UnmarshalAuthWith(b []byte, a *Authenticator) error {
	if len(b) < AuthSenderPacketLen {
		return errAuthSenderShort
	}
	if err := a.Verify(b); err != nil {
		return err
	}
	p.getAuth(b)
	return nil
}

// Authenticated Session-Reflector packet (RFC 8762 §4.3.2, SSID per RFC
// 8972 §3), octet offsets:
//
//	 0 Sequence Number (4)
//	 4 MBZ (12)
//	16 Timestamp (8)
//	24 Error Estimate (2)
//	26 SSID (2)
//	28 MBZ (4)
//	32 Receive Timestamp (8)
//	40 MBZ (8)
//	48 Session-Sender Sequence Number (4)
//	52 MBZ (12)
//	64 Session-Sender Timestamp (8)
//	72 Session-Sender Error Estimate (2)
//	74 MBZ (6)
//	80 Session-Sender TTL (1)
//	81 MBZ (15)
//	96 HMAC (16)
func (p *ReflectorPacket) putAuth(b []byte) {
	b = b[:AuthHMACOffset]
	binary.BigEndian.PutUint32(b[0:4], p.Sequence)
	clear(b[4:16])
	binary.BigEndian.PutUint64(b[16:24], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(b[24:26], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(b[26:28], p.SSID)
	clear(b[28:32])
	binary.BigEndian.PutUint64(b[32:40], uint64(p.ReceiveTimestamp))
	clear(b[40:48])
	binary.BigEndian.PutUint32(b[48:52], p.SenderSequence)
	clear(b[52:64])
	binary.BigEndian.PutUint64(b[64:72], uint64(p.SenderTimestamp))
	binary.BigEndian.PutUint16(b[72:74], uint16(p.SenderErrorEstimate))
	clear(b[74:80])
	b[80] = p.SenderTTL
	clear(b[81:96])
}

func (p *ReflectorPacket) getAuth(b []byte) {
	p.Sequence = binary.BigEndian.Uint32(b[0:4])
	p.Timestamp = Timestamp(binary.BigEndian.Uint64(b[16:24]))
	p.ErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[24:26]))
	p.SSID = binary.BigEndian.Uint16(b[26:28])
	p.ReceiveTimestamp = Timestamp(binary.BigEndian.Uint64(b[32:40]))
	p.SenderSequence = binary.BigEndian.Uint32(b[48:52])
	p.SenderTimestamp = Timestamp(binary.BigEndian.Uint64(b[64:72]))
	p.SenderErrorEstimate = ErrorEstimate(binary.BigEndian.Uint16(b[72:74]))
	p.SenderTTL = b[80]
}

// MarshalAuthTo writes the 112-octet authenticated Session-Reflector packet
// (RFC 8762 §4.3.2, SSID per RFC 8972 §3) into b[0:112] and returns
// [AuthReflectorPacketLen]. Layout (octet offsets): Sequence Number at 0,
// MBZ (12) at 4, Timestamp at 16, Error Estimate at 24, SSID at 26, MBZ (4)
// at 28, Receive Timestamp at 32, MBZ (8) at 40, Session-Sender Sequence
// Number at 48, MBZ (12) at 52, Session-Sender Timestamp at 64,
// Session-Sender Error Estimate at 72, MBZ (6) at 74, Session-Sender TTL at
// 80, MBZ (15) at 81, and at 96 the HMAC (16 octets) computed with key as
// described at [Authenticator]. MBZ octets are written as zero; b[112:]
// (TLVs) is left untouched. It returns 0 and an error matching
// [ErrTooShort], writing nothing, if len(b) < AuthReflectorPacketLen.
//
// MarshalAuthTo allocates the HMAC state for key on every call; use
// [ReflectorPacket.MarshalAuthWith] with a reused [Authenticator] to avoid
// that.
func (p *ReflectorPacket) MarshalAuthTo(b []byte, key []byte) (int, error) {
	if len(b) < AuthReflectorPacketLen {
		return 0, errAuthReflectorShort
	}
	return p.MarshalAuthWith(b, NewAuthenticator(key))
}

// MarshalAuthWith is [ReflectorPacket.MarshalAuthTo] with the HMAC
// computed by a (which must not be nil) instead of a fresh key. It does not
// allocate.
func (p *ReflectorPacket) MarshalAuthWith(b []byte, a *Authenticator) (int, error) {
	n, err := p.MarshalAuthUnsealed(b)
	if err != nil {
		return 0, err
	}
	if err := a.Seal(b); err != nil {
		return 0, err
	}
	return n, nil
}

// MarshalAuthUnsealed writes the authenticated Session-Reflector layout
// (RFC 8762 §4.3.2) into b[:112] without the HMAC, for a reflector that
// fills T3 last, just before sending, and then seals the packet once with
// [Authenticator.Seal]. It returns 112, or 0 and an error matching
// [ErrTooShort] if len(b) < [AuthReflectorPacketLen]. It does not allocate.
func (p *ReflectorPacket) MarshalAuthUnsealed(b []byte) (int, error) {
	if len(b) < AuthReflectorPacketLen {
		return 0, errAuthReflectorShort
	}
	p.putAuth(b)
	return AuthReflectorPacketLen, nil
}

// UnmarshalAuth verifies and decodes an authenticated Session-Reflector
// packet (RFC 8762 §4.3.2, SSID per RFC 8972 §3; layout at
// [ReflectorPacket.MarshalAuthTo]) from b. The HMAC is verified with key
// before any field is used, as RFC 8762 §4.4 requires. It returns an error
// matching [ErrTooShort] if len(b) < [AuthReflectorPacketLen] (112 octets)
// and [ErrBadHMAC] if the HMAC does not match; in both cases p is left
// unchanged. MBZ octets are ignored on receipt (they are covered by the
// HMAC), and b[112:] (TLVs) is ignored. UnmarshalAuth does not retain b; it
// allocates the HMAC state for key (see
// [ReflectorPacket.UnmarshalAuthWith]).
func (p *ReflectorPacket) UnmarshalAuth(b []byte, key []byte) error {
	if len(b) < AuthReflectorPacketLen {
		return errAuthReflectorShort
	}
	return p.UnmarshalAuthWith(b, NewAuthenticator(key))
}

// UnmarshalAuthWith is [ReflectorPacket.UnmarshalAuth] with the HMAC
// checked by a (which must not be nil) instead of a fresh key. It does not
// allocate.
func (p *ReflectorPacket) UnmarshalAuthWith(b []byte, a *Authenticator) error {
	if len(b) < AuthReflectorPacketLen {
		return errAuthReflectorShort
	}
	if err := a.Verify(b); err != nil {
		return err
	}
	p.getAuth(b)
	return nil
}
