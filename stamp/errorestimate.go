package stamp

import (
	"math"
	"math/bits"
	"time"
)

// Bit layout of the Error Estimate field (RFC 4656 §4.1.2, Z bit from
// RFC 8762 §4.2.1).
const (
	eeSBit       = 1 << 15 // S: clock synchronised to UTC
	eeZBit       = 1 << 14 // Z: 0 = NTP 64-bit timestamps, 1 = PTPv2 truncated
	eeScaleShift = 8
	eeScaleMask  = 0x3f
	eeMultMask   = 0xff
	maxScale     = eeScaleMask
)

// ErrorEstimate is the 16-bit Error Estimate field of a STAMP packet
// (RFC 8762 §4.2.1, which refers to RFC 4656 §4.1.2 for the layout):
//
//	bit 15     S  1 if the clock is synchronised to UTC by an external source
//	bit 14     Z  0 for NTP 64-bit timestamps, 1 for PTPv2 truncated
//	bits 13..8 Scale (6 bits)
//	bits 7..0  Multiplier (8 bits)
//
// The stated error is Multiplier * 2^(Scale-32) seconds. RFC 4656 §4.1.2
// says the Multiplier MUST NOT be zero on send; see [ErrorEstimate.Valid].
type ErrorEstimate uint16

// NewErrorEstimate builds an Error Estimate (RFC 8762 §4.2.1, RFC 4656
// §4.1.2) with S set to synchronized, Z = 0 (NTP timestamps) and the
// smallest Scale for which a Multiplier in 1..255 can express err. The
// Multiplier is rounded up, so the stated error, Multiplier *
// 2^(Scale-32) seconds, is never smaller than err. An err <= 0 gives
// Multiplier 1 and Scale 0 (2^-32 s, about 0.23 ns), because the Multiplier
// must not be zero. Every time.Duration is representable, so NewErrorEstimate
// never fails and the result always satisfies [ErrorEstimate.Valid].
func NewErrorEstimate(synchronized bool, err time.Duration) ErrorEstimate {
	var e ErrorEstimate
	if synchronized {
		e |= eeSBit
	}
	if err <= 0 {
		return e | 1
	}

	// u = ceil(err[ns] * 2^32 / 1e9): the error in units of 2^-32 s, as a
	// 128-bit number (uHi, uLo). err < 2^63 ns, so u < 2^66.
	ns := uint64(err)
	numHi, numLo := ns>>32, ns<<32
	uHi, r := numHi/1e9, numHi%1e9
	uLo, rem := bits.Div64(r, numLo, 1e9)
	if rem != 0 {
		var carry uint64
		uLo, carry = bits.Add64(uLo, 1, 0)
		uHi += carry
	}

	// Smallest scale s with ceil(u / 2^s) <= 255. The rounded-up estimate
	// ceil(u/2^s)*2^s grows with s, so the smallest s is also the tightest.
	for s := uint(0); s <= maxScale; s++ {
		var hi, lo uint64
		if s == 0 {
			hi, lo = uHi, uLo
		} else {
			hi, lo = uHi>>s, uLo>>s|uHi<<(64-s)
		}
		if hi != 0 || lo > eeMultMask {
			continue
		}
		m := lo
		if s > 0 && uLo&(1<<s-1) != 0 {
			m++ // round up
		}
		if m > eeMultMask {
			continue
		}
		return e | ErrorEstimate(s)<<eeScaleShift | ErrorEstimate(m)
	}
	// Unreachable for any time.Duration (s <= 58 always suffices); state the
	// largest representable error rather than understating it.
	return e | maxScale<<eeScaleShift | eeMultMask
}

// Synchronized reports the S bit (RFC 4656 §4.1.2): true if the sender's
// clock is synchronised to UTC by an external source.
func (e ErrorEstimate) Synchronized() bool { return e&eeSBit != 0 }

// PTP reports the Z bit (RFC 8762 §4.2.1): true if the timestamps of the
// packet carrying e use the PTPv2 truncated format rather than the NTP
// 64-bit format of [Timestamp].
func (e ErrorEstimate) PTP() bool { return e&eeZBit != 0 }

// Scale returns the 6-bit Scale field (0..63, RFC 4656 §4.1.2): the power of
// two applied to Multiplier * 2^-32 seconds.
func (e ErrorEstimate) Scale() uint8 { return uint8(e>>eeScaleShift) & eeScaleMask }

// Multiplier returns the 8-bit Multiplier field (RFC 4656 §4.1.2), in units
// of 2^(Scale-32) seconds.
func (e ErrorEstimate) Multiplier() uint8 { return uint8(e & eeMultMask) }

// Valid reports whether e may be sent: RFC 4656 §4.1.2 (via RFC 8762 §4.2.1)
// says the Multiplier MUST NOT be zero. Received estimates are not checked
// by the decoders in this package.
func (e ErrorEstimate) Valid() bool { return e.Multiplier() != 0 }

// Duration returns the error e states, Multiplier * 2^(Scale-32) seconds
// (RFC 4656 §4.1.2), rounded up to the next nanosecond so it is never less
// than the stated error. Errors larger than the largest time.Duration
// (about 292 years; possible only for Scale >= 58) saturate to
// math.MaxInt64 nanoseconds. A zero Multiplier gives 0.
func (e ErrorEstimate) Duration() time.Duration {
	m := uint64(e.Multiplier())
	s := uint(e.Scale())
	if s >= 32 {
		secs := m << (s - 32) // m < 2^8, s-32 < 32: fits
		if secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(secs) * time.Second
	}
	// ns = ceil(m * 2^s * 1e9 / 2^32); m*2^s < 2^39, times 1e9 < 2^69.
	hi, lo := bits.Mul64(m<<s, uint64(time.Second))
	ns := hi<<32 | lo>>32
	if lo&(1<<32-1) != 0 {
		ns++
	}
	return time.Duration(ns)
}
