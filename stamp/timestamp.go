package stamp

import "time"

// ntpUnixOffset is the number of seconds from the NTP prime epoch
// (1900-01-01 00:00:00 UTC) to the Unix epoch (1970-01-01 00:00:00 UTC).
const ntpUnixOffset = 2208988800

// Timestamp is a 64-bit NTP timestamp as used by STAMP (RFC 8762 §4.2.1,
// format defined in RFC 5905 §6): the high 32 bits are whole seconds since
// 1900-01-01 00:00:00 UTC (modulo 2^32, i.e. within an NTP era), the low 32
// bits are the fraction of a second in units of 2^-32 seconds (about
// 0.233 nanoseconds).
//
// The zero value is the start of NTP era 0 (1900-01-01 00:00:00 UTC), which
// [Timestamp.Time] maps to the start of era 1 (2036-02-07 06:28:16 UTC); see
// there for the era convention.
type Timestamp uint64

// NewTimestamp converts the wall-clock instant t to an NTP 64-bit timestamp
// (RFC 5905 §6) as carried in STAMP packets (RFC 8762 §4.2.1).
//
// The nanoseconds of t are rounded to the nearest 2^-32 second. The seconds
// are taken modulo 2^32, so instants outside NTP era 0 (from 2036-02-07
// 06:28:16 UTC on, or before 1900) wrap into the 32-bit seconds field as RFC
// 5905 §6 describes; [Timestamp.Time] undoes that wrap for instants between
// 1968 and 2104. The monotonic clock reading of t, if any, is not used.
// NewTimestamp does not allocate and never fails.
func NewTimestamp(t time.Time) Timestamp {
	// Conversion to uint32 keeps the low 32 bits, i.e. seconds modulo 2^32.
	secs := uint32(t.Unix() + ntpUnixOffset)
	// Nanosecond is in [0, 1e9), so ns<<32 < 2^62 and the rounded quotient
	// stays below 2^32.
	frac := (uint64(t.Nanosecond())<<32 + 500_000_000) / 1_000_000_000
	return Timestamp(uint64(secs)<<32 | frac)
}

// Seconds returns the 32-bit seconds field of ts: whole seconds since the
// start of the timestamp's NTP era (RFC 5905 §6).
func (ts Timestamp) Seconds() uint32 { return uint32(ts >> 32) }

// Fraction returns the 32-bit fraction field of ts, in units of 2^-32
// seconds (RFC 5905 §6).
func (ts Timestamp) Fraction() uint32 { return uint32(ts) }

// Time converts ts to a time.Time in UTC with the fraction rounded to the
// nearest nanosecond.
//
// A 64-bit NTP timestamp does not carry its era (RFC 5905 §6). Time resolves
// it with the convention of RFC 4330 §3: if the most significant bit of the
// seconds field is set, the instant is in era 0 (counted from
// 1900-01-01 00:00:00 UTC); otherwise it is in era 1 (counted from
// 2036-02-07 06:28:16 UTC). Time is therefore correct for instants from
// 1968-01-20 03:14:08 UTC up to (not including) 2104-02-26 09:42:24 UTC,
// and for those NewTimestamp(t).Time() equals t to the nanosecond. Time
// does not allocate and never fails.
func (ts Timestamp) Time() time.Time {
	secs := int64(ts.Seconds())
	if secs < 1<<31 {
		secs += 1 << 32 // era 1
	}
	// May round up to exactly 1e9; time.Unix normalises that.
	nsec := (uint64(ts.Fraction())*1_000_000_000 + 1<<31) >> 32
	return time.Unix(secs-ntpUnixOffset, int64(nsec)).UTC()
}

// Sub returns ts - o as a signed duration, rounded to the nearest
// nanosecond.
//
// The difference is computed in 64-bit two's-complement NTP arithmetic
// (RFC 5905 §6), so it is exact for timestamps less than 2^31 seconds
// (about 68 years) apart, including pairs that straddle an NTP era
// boundary such as 2036-02-07. Sub does not allocate.
func (ts Timestamp) Sub(o Timestamp) time.Duration {
	d := int64(uint64(ts) - uint64(o))
	secs := d >> 32                 // floor, arithmetic shift
	frac := uint64(d) & (1<<32 - 1) // non-negative remainder in 2^-32 s
	ns := (frac*1_000_000_000 + 1<<31) >> 32
	return time.Duration(secs)*time.Second + time.Duration(ns)
}
