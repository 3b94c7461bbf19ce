package stamp_test

import (
	"bytes"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// Hand-built wire images, written out field by field from the layouts of
// RFC 8762 §4.2.1 / §4.3.1 (SSID per RFC 8972 §3). They are deliberately not
// produced by the encoder.

// senderWire: Seq 0x01020304, T1 = 1970-01-01 00:00:00.5 UTC
// (0x83AA7E80.80000000), EE S=1 Z=0 Scale=1 Mult=2, SSID 0xBEEF.
var senderWire = []byte{
	0x01, 0x02, 0x03, 0x04, // 0  Sequence Number
	0x83, 0xAA, 0x7E, 0x80, 0x80, 0x00, 0x00, 0x00, // 4  Timestamp
	0x81, 0x02, // 12 Error Estimate
	0xBE, 0xEF, // 14 SSID
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 16 MBZ (28)
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
}

var senderWant = stamp.SenderPacket{
	Sequence:      0x01020304,
	Timestamp:     0x83AA7E80_80000000,
	ErrorEstimate: 0x8102,
	SSID:          0xBEEF,
}

var reflectorWire = []byte{
	0xA0, 0xB0, 0xC0, 0xD0, // 0  Sequence Number
	0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // 4  Timestamp T3
	0x0A, 0x05, // 12 Error Estimate: S=0 Z=0 Scale=10 Mult=5
	0x12, 0x34, // 14 SSID
	0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00, // 16 Receive Timestamp T2
	0x00, 0x00, 0x00, 0x07, // 24 Sender Sequence Number
	0x11, 0x22, 0x33, 0x43, 0x80, 0x00, 0x00, 0x00, // 28 Sender Timestamp T1
	0xC0, 0x01, // 36 Sender Error Estimate: S=1 Z=1 Scale=0 Mult=1
	0x00, 0x00, // 38 MBZ
	0x40,             // 40 Sender TTL
	0x00, 0x00, 0x00, // 41 MBZ
}

var reflectorWant = stamp.ReflectorPacket{
	Sequence:            0xA0B0C0D0,
	Timestamp:           0x11223344_55667788,
	ErrorEstimate:       0x0A05,
	SSID:                0x1234,
	ReceiveTimestamp:    0x11223344_00000000,
	SenderSequence:      7,
	SenderTimestamp:     0x11223343_80000000,
	SenderErrorEstimate: 0xC001,
	SenderTTL:           0x40,
}

// MBZ octet offsets.
var (
	senderMBZ    = rangeInts(16, 44)
	reflectorMBZ = []int{38, 39, 41, 42, 43}
)

func rangeInts(lo, hi int) []int {
	var r []int
	for i := lo; i < hi; i++ {
		r = append(r, i)
	}
	return r
}

// withMBZ returns a copy of b with the given offsets set to v.
func withMBZ(b []byte, offs []int, v byte) []byte {
	c := bytes.Clone(b)
	for _, o := range offs {
		c[o] = v
	}
	return c
}

func TestWireLengths(t *testing.T) {
	if len(senderWire) != stamp.SenderPacketLen {
		t.Fatalf("senderWire has %d octets", len(senderWire))
	}
	if len(reflectorWire) != stamp.ReflectorPacketLen {
		t.Fatalf("reflectorWire has %d octets", len(reflectorWire))
	}
}

func TestSenderDecode(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want stamp.SenderPacket
	}{
		{"hand-built", senderWire, senderWant},
		{"MBZ non-zero ignored", withMBZ(senderWire, senderMBZ, 0xFF), senderWant},
		{"trailing octets ignored", append(bytes.Clone(senderWire), 0xDE, 0xAD, 0xBE, 0xEF), senderWant},
		{"all zero", make([]byte, 44), stamp.SenderPacket{}},
		{"all ones", bytes.Repeat([]byte{0xFF}, 44), stamp.SenderPacket{
			Sequence: math.MaxUint32, Timestamp: math.MaxUint64, ErrorEstimate: 0xFFFF, SSID: 0xFFFF,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p stamp.SenderPacket
			if err := p.UnmarshalBinary(tc.in); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if p != tc.want {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestSenderEncode(t *testing.T) {
	got, err := senderWant.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, senderWire) {
		t.Errorf("MarshalBinary:\n got % x\nwant % x", got, senderWire)
	}

	// MarshalTo zeroes MBZ and leaves b[44:] alone.
	buf := bytes.Repeat([]byte{0xAA}, 50)
	n, err := senderWant.MarshalTo(buf)
	if err != nil || n != stamp.SenderPacketLen {
		t.Fatalf("MarshalTo = %d, %v", n, err)
	}
	if !bytes.Equal(buf[:44], senderWire) {
		t.Errorf("MarshalTo:\n got % x\nwant % x", buf[:44], senderWire)
	}
	if !bytes.Equal(buf[44:], bytes.Repeat([]byte{0xAA}, 6)) {
		t.Errorf("MarshalTo touched b[44:]: % x", buf[44:])
	}

	app, err := senderWant.AppendBinary([]byte{9, 9})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(app, append([]byte{9, 9}, senderWire...)) {
		t.Errorf("AppendBinary: % x", app)
	}
}

func TestReflectorDecode(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want stamp.ReflectorPacket
	}{
		{"hand-built", reflectorWire, reflectorWant},
		{"MBZ non-zero ignored", withMBZ(reflectorWire, reflectorMBZ, 0xFF), reflectorWant},
		{"trailing octets ignored", append(bytes.Clone(reflectorWire), make([]byte, 100)...), reflectorWant},
		{"all zero", make([]byte, 44), stamp.ReflectorPacket{}},
		{"all ones", bytes.Repeat([]byte{0xFF}, 44), stamp.ReflectorPacket{
			Sequence: math.MaxUint32, Timestamp: math.MaxUint64, ErrorEstimate: 0xFFFF, SSID: 0xFFFF,
			ReceiveTimestamp: math.MaxUint64, SenderSequence: math.MaxUint32, SenderTimestamp: math.MaxUint64,
			SenderErrorEstimate: 0xFFFF, SenderTTL: 0xFF,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p stamp.ReflectorPacket
			if err := p.UnmarshalBinary(tc.in); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if p != tc.want {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestReflectorEncode(t *testing.T) {
	got, err := reflectorWant.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reflectorWire) {
		t.Errorf("MarshalBinary:\n got % x\nwant % x", got, reflectorWire)
	}

	buf := bytes.Repeat([]byte{0xAA}, 64)
	n, err := reflectorWant.MarshalTo(buf)
	if err != nil || n != stamp.ReflectorPacketLen {
		t.Fatalf("MarshalTo = %d, %v", n, err)
	}
	if !bytes.Equal(buf[:44], reflectorWire) {
		t.Errorf("MarshalTo:\n got % x\nwant % x", buf[:44], reflectorWire)
	}
	if !bytes.Equal(buf[44:], bytes.Repeat([]byte{0xAA}, 20)) {
		t.Errorf("MarshalTo touched b[44:]: % x", buf[44:])
	}

	app, err := reflectorWant.AppendBinary(nil)
	if err != nil || !bytes.Equal(app, reflectorWire) {
		t.Errorf("AppendBinary = % x, %v", app, err)
	}
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		s := stamp.SenderPacket{
			Sequence:      r.Uint32(),
			Timestamp:     stamp.Timestamp(r.Uint64()),
			ErrorEstimate: stamp.ErrorEstimate(r.Uint32()),
			SSID:          uint16(r.Uint32()),
		}
		b, err := s.MarshalBinary()
		if err != nil || len(b) != stamp.SenderPacketLen {
			t.Fatalf("sender MarshalBinary = %d octets, %v", len(b), err)
		}
		var s2 stamp.SenderPacket
		if err := s2.UnmarshalBinary(b); err != nil || s2 != s {
			t.Fatalf("sender round trip: %+v -> %+v, %v", s, s2, err)
		}

		p := stamp.ReflectorPacket{
			Sequence:            r.Uint32(),
			Timestamp:           stamp.Timestamp(r.Uint64()),
			ErrorEstimate:       stamp.ErrorEstimate(r.Uint32()),
			SSID:                uint16(r.Uint32()),
			ReceiveTimestamp:    stamp.Timestamp(r.Uint64()),
			SenderSequence:      r.Uint32(),
			SenderTimestamp:     stamp.Timestamp(r.Uint64()),
			SenderErrorEstimate: stamp.ErrorEstimate(r.Uint32()),
			SenderTTL:           uint8(r.Uint32()),
		}
		b, err = p.MarshalBinary()
		if err != nil || len(b) != stamp.ReflectorPacketLen {
			t.Fatalf("reflector MarshalBinary = %d octets, %v", len(b), err)
		}
		var p2 stamp.ReflectorPacket
		if err := p2.UnmarshalBinary(b); err != nil || p2 != p {
			t.Fatalf("reflector round trip: %+v -> %+v, %v", p, p2, err)
		}
	}
}

func TestShortBuffers(t *testing.T) {
	for _, n := range []int{0, 1, 16, 43} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0x5A
		}
		orig := bytes.Clone(b)

		s := senderWant
		if err := s.UnmarshalBinary(b); !errors.Is(err, stamp.ErrTooShort) {
			t.Errorf("sender UnmarshalBinary(%d octets) = %v, want ErrTooShort", n, err)
		}
		if s != senderWant {
			t.Errorf("sender UnmarshalBinary(%d octets) modified the packet", n)
		}
		if w, err := senderWant.MarshalTo(b); w != 0 || !errors.Is(err, stamp.ErrTooShort) {
			t.Errorf("sender MarshalTo(%d octets) = %d, %v, want 0, ErrTooShort", n, w, err)
		}

		r := reflectorWant
		if err := r.UnmarshalBinary(b); !errors.Is(err, stamp.ErrTooShort) {
			t.Errorf("reflector UnmarshalBinary(%d octets) = %v, want ErrTooShort", n, err)
		}
		if r != reflectorWant {
			t.Errorf("reflector UnmarshalBinary(%d octets) modified the packet", n)
		}
		if w, err := reflectorWant.MarshalTo(b); w != 0 || !errors.Is(err, stamp.ErrTooShort) {
			t.Errorf("reflector MarshalTo(%d octets) = %d, %v, want 0, ErrTooShort", n, w, err)
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("MarshalTo(%d octets) wrote into a short buffer", n)
		}
	}
	// nil buffer too.
	var s stamp.SenderPacket
	if err := s.UnmarshalBinary(nil); !errors.Is(err, stamp.ErrTooShort) {
		t.Errorf("UnmarshalBinary(nil) = %v", err)
	}
}

func TestNewTimestamp(t *testing.T) {
	tests := []struct {
		name string
		in   time.Time
		want stamp.Timestamp
	}{
		{"NTP epoch", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), 0},
		{"Unix epoch", time.Unix(0, 0), 2208988800 << 32},
		{"Unix epoch + 0.5 s", time.Unix(0, 500_000_000), 2208988800<<32 | 0x80000000},
		{"Unix epoch + 0.25 s", time.Unix(0, 250_000_000), 2208988800<<32 | 0x40000000},
		{"Unix epoch + 1 ns", time.Unix(0, 1), 2208988800<<32 | 4}, // 4.29 -> 4
		{"Unix epoch + 999999999 ns", time.Unix(0, 999_999_999), 2208988800<<32 | 0xFFFFFFFC},
		{"2000-01-01", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), 3155673600 << 32},
		{"non-UTC location", time.Date(2000, 1, 1, 1, 0, 0, 0, time.FixedZone("X", 3600)), 3155673600 << 32},
		{"last second of era 0", time.Date(2036, 2, 7, 6, 28, 15, 0, time.UTC), 0xFFFFFFFF << 32},
		{"era 1 start wraps to 0", time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC), 0},
		{"era 1 + 1 s", time.Date(2036, 2, 7, 6, 28, 17, 0, time.UTC), 1 << 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stamp.NewTimestamp(tc.in); got != tc.want {
				t.Errorf("NewTimestamp(%v) = %#x, want %#x", tc.in, uint64(got), uint64(tc.want))
			}
		})
	}
}

func TestTimestampAccessors(t *testing.T) {
	ts := stamp.Timestamp(0x83AA7E80_80000000)
	if ts.Seconds() != 2208988800 || ts.Fraction() != 0x80000000 {
		t.Errorf("Seconds, Fraction = %d, %#x", ts.Seconds(), ts.Fraction())
	}
}

func TestTimestampTime(t *testing.T) {
	tests := []struct {
		in   stamp.Timestamp
		want time.Time
	}{
		{2208988800 << 32, time.Unix(0, 0)},
		{2208988800<<32 | 0x80000000, time.Unix(0, 500_000_000)},
		{2208988800<<32 | 1, time.Unix(0, 0)},          // 0.23 ns rounds down
		{2208988800<<32 | 3, time.Unix(0, 1)},          // 0.70 ns rounds up
		{2208988800<<32 | 0xFFFFFFFF, time.Unix(1, 0)}, // rounds up into the next second
		{3155673600 << 32, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{0x80000000 << 32, time.Date(1968, 1, 20, 3, 14, 8, 0, time.UTC)}, // earliest era-0 instant
		{0xFFFFFFFF << 32, time.Date(2036, 2, 7, 6, 28, 15, 0, time.UTC)},
		{0, time.Date(2036, 2, 7, 6, 28, 16, 0, time.UTC)}, // era 1 by RFC 4330 §3
		{0x7FFFFFFF << 32, time.Date(2104, 2, 26, 9, 42, 23, 0, time.UTC)},
	}
	for _, tc := range tests {
		got := tc.in.Time()
		if !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("Timestamp(%#x).Time() = %v, want %v", uint64(tc.in), got, tc.want.UTC())
		}
	}
}

func TestTimestampRoundTrip(t *testing.T) {
	lo := time.Date(1968, 1, 20, 3, 14, 8, 0, time.UTC).UnixNano()
	hi := time.Date(2104, 2, 26, 9, 42, 23, 999_999_999, time.UTC)
	r := rand.New(rand.NewPCG(3, 4))
	check := func(tm time.Time) {
		t.Helper()
		if got := stamp.NewTimestamp(tm).Time(); !got.Equal(tm) {
			t.Errorf("round trip %v -> %v", tm, got)
		}
	}
	check(time.Unix(0, lo))
	check(hi)
	for range 100_000 {
		// UnixNano of hi overflows int64, so draw seconds and nanoseconds.
		sec := lo/1e9 + r.Int64N(hi.Unix()-lo/1e9+1)
		check(time.Unix(sec, r.Int64N(1e9)))
	}
	// All nanosecond values within one second.
	for ns := int64(0); ns < 1e9; ns += 997 {
		check(time.Unix(1_700_000_000, ns))
	}
}

func TestTimestampSub(t *testing.T) {
	base := time.Date(2024, 5, 6, 7, 8, 9, 123_456_789, time.UTC)
	ts := stamp.NewTimestamp(base)
	tests := []struct {
		name string
		a, b stamp.Timestamp
		want time.Duration
	}{
		{"equal", ts, ts, 0},
		{"one unit", ts + 1, ts, 0},
		{"minus one unit", ts, ts + 1, 0},
		{"four units", ts + 4, ts, 1},
		{"half second", ts + 0x80000000, ts, 500 * time.Millisecond},
		{"minus half second", ts, ts + 0x80000000, -500 * time.Millisecond},
		{"1.5 ms", stamp.NewTimestamp(base.Add(1500 * time.Microsecond)), ts, 1500 * time.Microsecond},
		{"-1.5 ms", ts, stamp.NewTimestamp(base.Add(1500 * time.Microsecond)), -1500 * time.Microsecond},
		{"1 ns", stamp.NewTimestamp(base.Add(1)), ts, 1},
		{"1 us", stamp.NewTimestamp(base.Add(time.Microsecond)), ts, time.Microsecond},
		{"across era boundary",
			stamp.NewTimestamp(time.Date(2036, 2, 7, 6, 28, 16, 250_000_000, time.UTC)),
			stamp.NewTimestamp(time.Date(2036, 2, 7, 6, 28, 15, 0, time.UTC)),
			1250 * time.Millisecond},
		{"backwards across era boundary",
			stamp.NewTimestamp(time.Date(2036, 2, 7, 6, 28, 15, 0, time.UTC)),
			stamp.NewTimestamp(time.Date(2036, 2, 7, 6, 28, 16, 250_000_000, time.UTC)),
			-1250 * time.Millisecond},
		{"about 68 years", 0x7FFFFFFF << 32, 0, (1<<31 - 1) * time.Second},
		{"about -68 years", 0, 0x7FFFFFFF << 32, -(1<<31 - 1) * time.Second},
		{"most negative", 0, 0x80000000 << 32, -(1 << 31) * time.Second},
	}
	for _, tc := range tests {
		if got := tc.a.Sub(tc.b); got != tc.want {
			t.Errorf("%s: Sub = %v, want %v", tc.name, got, tc.want)
		}
	}

	// Agreement with time.Time.Sub within rounding for random close pairs.
	r := rand.New(rand.NewPCG(5, 6))
	for range 10_000 {
		a := base.Add(time.Duration(r.Int64N(int64(48 * time.Hour))))
		b := a.Add(time.Duration(r.Int64N(int64(2*time.Hour))) - time.Hour)
		got := stamp.NewTimestamp(b).Sub(stamp.NewTimestamp(a))
		if diff := got - b.Sub(a); diff < -1 || diff > 1 {
			t.Fatalf("Sub(%v, %v) = %v, want %v ±1ns", b, a, got, b.Sub(a))
		}
	}
}

func TestDwell(t *testing.T) {
	p := reflectorWant // T3 = 0x11223344_55667788, T2 = 0x11223344_00000000
	want := time.Duration((0x55667788*uint64(time.Second) + 1<<31) >> 32)
	if got := p.Dwell(); got != want {
		t.Errorf("Dwell = %v, want %v", got, want)
	}
	p.Timestamp, p.ReceiveTimestamp = p.ReceiveTimestamp, p.Timestamp
	if got := p.Dwell(); got != 0 {
		t.Errorf("negative Dwell = %v, want 0", got)
	}
	p.Timestamp = p.ReceiveTimestamp + 0x80000000
	if got := p.Dwell(); got != 500*time.Millisecond {
		t.Errorf("Dwell = %v, want 500ms", got)
	}
}

func TestDwellOK(t *testing.T) {
	ntp := reflectorWant // T3 = 0x11223344_55667788, T2 = 0x11223344_00000000
	ntp.ErrorEstimate = stamp.NewErrorEstimate(true, time.Microsecond)
	ptp := ntp
	ptp.ErrorEstimate |= 1 << 14 // Z
	ptp.ReceiveTimestamp, ptp.Timestamp = 0x11223344_00000000, 0x11223344_000003e8
	swapped := ntp
	swapped.Timestamp, swapped.ReceiveTimestamp = ntp.ReceiveTimestamp, ntp.Timestamp
	zeroT2, zeroT3 := ntp, ntp
	zeroT2.ReceiveTimestamp, zeroT3.Timestamp = 0, 0
	unconverted := ntp
	unconverted.ErrorEstimate = ptp.ErrorEstimate // an NTP fraction over 10^9, read as PTP
	for _, tc := range []struct {
		name string
		p    stamp.ReflectorPacket
		want time.Duration
		ok   bool
	}{
		{"NTP", ntp, time.Duration((0x55667788*uint64(time.Second) + 1<<31) >> 32), true},
		{"PTP", ptp, time.Microsecond, true},
		{"equal", func() stamp.ReflectorPacket { p := ntp; p.Timestamp = p.ReceiveTimestamp; return p }(), 0, true},
		{"T3 before T2", swapped, 0, false},
		{"T2 zero", zeroT2, 0, false},
		{"T3 zero", zeroT3, 0, false},
		{"PTP nanoseconds over 10^9", unconverted, 0, false},
	} {
		if d, ok := tc.p.DwellOK(); d != tc.want || ok != tc.ok {
			t.Errorf("%s: DwellOK = %v, %v; want %v, %v", tc.name, d, ok, tc.want, tc.ok)
		}
	}
}

func TestErrorEstimateDecode(t *testing.T) {
	tests := []struct {
		in         stamp.ErrorEstimate
		sync, ptp  bool
		scale, mul uint8
		valid      bool
		dur        time.Duration
	}{
		{0x0000, false, false, 0, 0, false, 0},
		{0x0001, false, false, 0, 1, true, 1}, // 0.23 ns rounds up to 1 ns
		{0x8000, true, false, 0, 0, false, 0},
		{0x4000, false, true, 0, 0, false, 0},
		{0xC0FF, true, true, 0, 255, true, 60}, // 255 * 2^-32 s = 59.4 ns
		{0x3F00, false, false, 63, 0, false, 0},
		{0x2001, false, false, 32, 1, true, time.Second},
		{0x2002, false, false, 32, 2, true, 2 * time.Second},
		{0x1F01, false, false, 31, 1, true, 500 * time.Millisecond},
		{0x1980, false, false, 25, 128, true, time.Second},
		{0x8102, true, false, 1, 2, true, 1},      // 4 * 2^-32 s = 0.93 ns
		{0x0A05, false, false, 10, 5, true, 1193}, // 5120 * 2^-32 s = 1192.09 ns
		{0x20FF, false, false, 32, 255, true, 255 * time.Second},
		{0x3FFF, false, false, 63, 255, true, math.MaxInt64}, // saturates
		{0x3A89, false, false, 58, 137, true, 137 << 26 * time.Second},
		{0x3A8A, false, false, 58, 138, true, math.MaxInt64}, // 138 * 2^26 s > max Duration
		{0xFFFF, true, true, 63, 255, true, math.MaxInt64},
	}
	for _, tc := range tests {
		e := tc.in
		if e.Synchronized() != tc.sync || e.PTP() != tc.ptp || e.Scale() != tc.scale ||
			e.Multiplier() != tc.mul || e.Valid() != tc.valid {
			t.Errorf("%#04x: S=%v Z=%v Scale=%d Mult=%d Valid=%v; want %v %v %d %d %v", uint16(e),
				e.Synchronized(), e.PTP(), e.Scale(), e.Multiplier(), e.Valid(),
				tc.sync, tc.ptp, tc.scale, tc.mul, tc.valid)
		}
		if got := e.Duration(); got != tc.dur {
			t.Errorf("%#04x: Duration = %v, want %v", uint16(e), got, tc.dur)
		}
	}
}

func TestNewErrorEstimate(t *testing.T) {
	tests := []struct {
		sync bool
		in   time.Duration
		want stamp.ErrorEstimate
	}{
		{false, 0, 0x0001},
		{true, 0, 0x8001},
		{true, -5 * time.Second, 0x8001},
		{false, math.MinInt64, 0x0001},
		{false, 1, 0x0005},                     // ceil(4.29) = 5 units
		{false, 59, 0x00FE},                    // ceil(253.4) = 254
		{false, 60, 0x0181},                    // 257.7 units: Scale 1, ceil(128.8) = 129
		{false, time.Microsecond, 0x0587},      // 4294.97 units: Scale 5, ceil(134.2) = 135
		{true, time.Millisecond, 0x8F84},       // 4294967.3 units: Scale 15, ceil(131.07) = 132
		{false, time.Second, 0x1980},           // 2^32 units: Scale 25, 128 exactly
		{false, time.Second + 1, 0x1981},       // just above: 129
		{false, 255 * time.Second, 0x20FF},     // 255 * 2^32 exactly
		{false, 256 * time.Second, 0x2180},     // 2^40: Scale 33, 128
		{false, math.MaxInt64, 0x3A8A},         // 9223372036.85 s: Scale 58, ceil(137.44) = 138
		{true, 500 * time.Millisecond, 0x9880}, // 2^31 units: Scale 24, 128
	}
	for _, tc := range tests {
		if got := stamp.NewErrorEstimate(tc.sync, tc.in); got != tc.want {
			t.Errorf("NewErrorEstimate(%v, %v) = %#04x (Scale %d Mult %d), want %#04x",
				tc.sync, tc.in, uint16(got), got.Scale(), got.Multiplier(), uint16(tc.want))
		}
	}
}

// TestNewErrorEstimateProperties checks, with exact rational arithmetic,
// that the estimate is never below the input, that Multiplier-1 at the same
// Scale would be below it (tight rounding), and that no smaller Scale fits.
func TestNewErrorEstimateProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	check := func(d time.Duration) {
		t.Helper()
		e := stamp.NewErrorEstimate(false, d)
		if e.PTP() || e.Synchronized() || !e.Valid() {
			t.Fatalf("NewErrorEstimate(%v) = %#04x: bad flags", d, uint16(e))
		}
		m, s := int64(e.Multiplier()), uint(e.Scale())
		// Compare m * 2^s * 1e9 with d * 2^32 (both in 2^-32 ns units).
		input := new(big.Int).Lsh(big.NewInt(int64(d)), 32)
		stated := func(m int64) *big.Int {
			x := new(big.Int).Lsh(big.NewInt(m), s)
			return x.Mul(x, big.NewInt(1e9))
		}
		if stated(m).Cmp(input) < 0 {
			t.Fatalf("NewErrorEstimate(%v) = Scale %d Mult %d understates", d, s, m)
		}
		if m > 1 && stated(m-1).Cmp(input) >= 0 {
			t.Fatalf("NewErrorEstimate(%v) = Scale %d Mult %d not tight", d, s, m)
		}
		if s > 0 && m < 128 {
			t.Fatalf("NewErrorEstimate(%v) = Scale %d Mult %d: smaller Scale fits", d, s, m)
		}
		if e.Duration() < d {
			t.Fatalf("NewErrorEstimate(%v).Duration() = %v < input", d, e.Duration())
		}
	}
	for i := range 64 {
		for _, dd := range []int64{-1, 0, 1} {
			d := int64(1)<<i + dd
			if d > 0 {
				check(time.Duration(d))
			}
		}
	}
	for range 100_000 {
		// Log-uniform over the Duration range.
		check(time.Duration(r.Int64N(int64(1)<<r.IntN(63))) + 1)
	}
}

var (
	sinkTS  stamp.Timestamp
	sinkT   time.Time
	sinkDur time.Duration
)

func TestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	buf := make([]byte, 64)
	s := senderWant
	r := reflectorWant
	var s2 stamp.SenderPacket
	var r2 stamp.ReflectorPacket
	now := time.Now()

	cases := []struct {
		name string
		fn   func()
	}{
		{"SenderPacket.MarshalTo", func() { _, _ = s.MarshalTo(buf) }},
		{"SenderPacket.UnmarshalBinary", func() { _ = s2.UnmarshalBinary(senderWire) }},
		{"SenderPacket.AppendBinary", func() { _, _ = s.AppendBinary(buf[:0]) }},
		{"ReflectorPacket.MarshalTo", func() { _, _ = r.MarshalTo(buf) }},
		{"ReflectorPacket.UnmarshalBinary", func() { _ = r2.UnmarshalBinary(reflectorWire) }},
		{"ReflectorPacket.AppendBinary", func() { _, _ = r.AppendBinary(buf[:0]) }},
		{"ReflectorPacket.Dwell", func() { sinkDur = r.Dwell() }},
		{"ReflectorPacket.DwellOK", func() { sinkDur, _ = r.DwellOK() }},
		{"NewTimestamp", func() { sinkTS = stamp.NewTimestamp(now) }},
		{"Timestamp.Time", func() { sinkT = sinkTS.Time() }},
		{"Timestamp.Sub", func() { sinkDur = sinkTS.Sub(s.Timestamp) }},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(1000, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, n)
		}
	}
}

func BenchmarkSenderMarshalTo(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, stamp.SenderPacketLen)
	p := senderWant
	for b.Loop() {
		p.Sequence++
		if _, err := p.MarshalTo(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSenderUnmarshalBinary(b *testing.B) {
	b.ReportAllocs()
	var p stamp.SenderPacket
	for b.Loop() {
		if err := p.UnmarshalBinary(senderWire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReflectorMarshalTo(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, stamp.ReflectorPacketLen)
	p := reflectorWant
	for b.Loop() {
		p.Sequence++
		if _, err := p.MarshalTo(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReflectorUnmarshalBinary(b *testing.B) {
	b.ReportAllocs()
	var p stamp.ReflectorPacket
	for b.Loop() {
		if err := p.UnmarshalBinary(reflectorWire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewTimestamp(b *testing.B) {
	b.ReportAllocs()
	now := time.Now()
	for b.Loop() {
		sinkTS = stamp.NewTimestamp(now)
	}
}

func BenchmarkTimestampTime(b *testing.B) {
	b.ReportAllocs()
	ts := stamp.NewTimestamp(time.Now())
	for b.Loop() {
		sinkT = ts.Time()
	}
}

// zeroMBZ returns a copy of b[:44] with the given MBZ offsets cleared: the
// octets a re-encode of a decoded packet must produce.
func zeroMBZ(b []byte, offs []int) []byte {
	return withMBZ(b[:44], offs, 0)
}

func FuzzSenderPacket(f *testing.F) {
	f.Add(senderWire)
	f.Add(withMBZ(senderWire, senderMBZ, 0xFF))
	f.Add(append(bytes.Clone(senderWire), 1, 2, 3))
	f.Add(reflectorWire)
	f.Add(senderWire[:43])
	f.Add([]byte{})
	f.Add(make([]byte, 44))
	f.Add(bytes.Repeat([]byte{0xFF}, 44))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p stamp.SenderPacket
		err := p.UnmarshalBinary(data)
		if len(data) < stamp.SenderPacketLen {
			if !errors.Is(err, stamp.ErrTooShort) {
				t.Fatalf("UnmarshalBinary(%d octets) = %v, want ErrTooShort", len(data), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("UnmarshalBinary(%d octets) = %v", len(data), err)
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if want := zeroMBZ(data, senderMBZ); !bytes.Equal(out, want) {
			t.Fatalf("re-encode:\n got % x\nwant % x", out, want)
		}
		var q stamp.SenderPacket
		if err := q.UnmarshalBinary(out); err != nil {
			t.Fatal(err)
		}
		if q != p {
			t.Fatalf("decode/encode/decode: %+v != %+v", q, p)
		}
	})
}

func FuzzReflectorPacket(f *testing.F) {
	f.Add(reflectorWire)
	f.Add(withMBZ(reflectorWire, reflectorMBZ, 0xFF))
	f.Add(append(bytes.Clone(reflectorWire), make([]byte, 20)...))
	f.Add(senderWire)
	f.Add(reflectorWire[:43])
	f.Add([]byte{})
	f.Add(make([]byte, 44))
	f.Add(bytes.Repeat([]byte{0xFF}, 44))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p stamp.ReflectorPacket
		err := p.UnmarshalBinary(data)
		if len(data) < stamp.ReflectorPacketLen {
			if !errors.Is(err, stamp.ErrTooShort) {
				t.Fatalf("UnmarshalBinary(%d octets) = %v, want ErrTooShort", len(data), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("UnmarshalBinary(%d octets) = %v", len(data), err)
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if want := zeroMBZ(data, reflectorMBZ); !bytes.Equal(out, want) {
			t.Fatalf("re-encode:\n got % x\nwant % x", out, want)
		}
		var q stamp.ReflectorPacket
		if err := q.UnmarshalBinary(out); err != nil {
			t.Fatal(err)
		}
		if q != p {
			t.Fatalf("decode/encode/decode: %+v != %+v", q, p)
		}
		if d := p.Dwell(); d < 0 {
			t.Fatalf("Dwell = %v < 0", d)
		}
	})
}
