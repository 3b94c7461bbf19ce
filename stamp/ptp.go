package stamp

import "time"

// PTPSub returns a - b for two timestamps in the PTPv2 truncated format
// that STAMP packets carry when the Z bit of their Error Estimate is set
// (RFC 8762 §4.2.1): the high 32 bits are seconds since the PTP epoch
// (1970-01-01 TAI, modulo 2^32), the low 32 bits nanoseconds. The seconds
// are compared modulo 2^32, so the difference is right for timestamps less
// than 68 years apart. A nanoseconds field of 10^9 or more is not a valid
// PTP timestamp; it is used as it is.
func PTPSub(a, b uint64) time.Duration {
	secs := int64(int32(uint32(a>>32) - uint32(b>>32)))
	nanos := int64(uint32(a)) - int64(uint32(b))
	return time.Duration(secs)*time.Second + time.Duration(nanos)
}

// NewPTPTimestamp returns the PTPv2 truncated timestamp of t (RFC 8762
// §4.2.1) as a 64-bit field: seconds since the Unix epoch modulo 2^32, then
// nanoseconds. It takes t as TAI: the offset of TAI from UTC does not
// matter for the differences a sender computes from one reflector's
// timestamps.
func NewPTPTimestamp(t time.Time) uint64 {
	return uint64(uint32(t.Unix()))<<32 | uint64(t.Nanosecond())
}
