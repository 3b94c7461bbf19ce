package stamp_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// tlvArea is a hand-built RFC 8972 §4 TLV area: Flags, Type, Length
// (big-endian, Value only), Value.
var tlvArea = []byte{
	// Extra Padding (type 1), U flag as a sender sends it, 3 octets.
	0x80, 0x01, 0x00, 0x03, 0xAA, 0xBB, 0xCC,
	// Class of Service (type 4), reflector flags 0, 4 octets:
	// DSCP1=46 DSCP2=10 ECN=3 RP=1 (see TestClassOfServiceWire).
	0x00, 0x04, 0x00, 0x04, 0xB8, 0xAD, 0x00, 0x00,
	// Unassigned type 200, all three flags and a reserved bit, empty Value.
	0xF0, 0xC8, 0x00, 0x00,
	// A second Class of Service TLV (FindTLV must return the first).
	0x80, 0x04, 0x00, 0x04, 0x88, 0x00, 0x00, 0x00,
	// HMAC (type 8), I flag, 16 octets.
	0x20, 0x08, 0x00, 0x10,
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
}

var tlvAreaWant = []stamp.TLV{
	{Flags: 0x80, Type: stamp.TLVExtraPadding, Value: []byte{0xAA, 0xBB, 0xCC}},
	{Flags: 0x00, Type: stamp.TLVClassOfService, Value: []byte{0xB8, 0xAD, 0x00, 0x00}},
	{Flags: 0xF0, Type: 200, Value: []byte{}},
	{Flags: 0x80, Type: stamp.TLVClassOfService, Value: []byte{0x88, 0x00, 0x00, 0x00}},
	{Flags: 0x20, Type: stamp.TLVHMAC, Value: []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
}

func TestTLVConstants(t *testing.T) {
	// RFC 8972 §5.1 (IANA STAMP TLV Types) and §5.2 (STAMP TLV Flags).
	types := []struct {
		got, want uint8
	}{
		{stamp.TLVExtraPadding, 1}, {stamp.TLVLocation, 2}, {stamp.TLVTimestampInfo, 3},
		{stamp.TLVClassOfService, 4}, {stamp.TLVDirectMeasurement, 5}, {stamp.TLVAccessReport, 6},
		{stamp.TLVFollowUpTelemetry, 7}, {stamp.TLVHMAC, 8},
		{stamp.TLVFlagU, 0x80}, {stamp.TLVFlagM, 0x40}, {stamp.TLVFlagI, 0x20},
	}
	for i, c := range types {
		if c.got != c.want {
			t.Errorf("constant %d = %d, want %d", i, c.got, c.want)
		}
	}
}

// tlvEqual compares two TLVs, treating nil and empty Values alike.
func tlvEqual(a, b stamp.TLV) bool {
	return a.Flags == b.Flags && a.Type == b.Type && bytes.Equal(a.Value, b.Value)
}

func TestNextTLVIteration(t *testing.T) {
	var got []stamp.TLV
	rest := tlvArea
	for len(rest) > 0 {
		tl, r, err := stamp.NextTLV(rest)
		if err != nil {
			t.Fatalf("NextTLV at offset %d: %v", len(tlvArea)-len(rest), err)
		}
		if len(r) != len(rest)-tl.Len() {
			t.Fatalf("rest has %d octets, want %d", len(r), len(rest)-tl.Len())
		}
		got = append(got, tl)
		rest = r
	}
	if len(got) != len(tlvAreaWant) {
		t.Fatalf("got %d TLVs, want %d", len(got), len(tlvAreaWant))
	}
	for i := range got {
		if !tlvEqual(got[i], tlvAreaWant[i]) {
			t.Errorf("TLV %d = %+v, want %+v", i, got[i], tlvAreaWant[i])
		}
	}
	if f := got[2]; !f.Unrecognized() || !f.Malformed() || !f.IntegrityFailed() {
		t.Errorf("flags 0xF0: U=%v M=%v I=%v", f.Unrecognized(), f.Malformed(), f.IntegrityFailed())
	}
	if f := got[4]; f.Unrecognized() || f.Malformed() || !f.IntegrityFailed() {
		t.Errorf("flags 0x20: U=%v M=%v I=%v", f.Unrecognized(), f.Malformed(), f.IntegrityFailed())
	}
	if got[0].Len() != 7 || got[2].Len() != 4 {
		t.Errorf("Len = %d, %d", got[0].Len(), got[2].Len())
	}
}

func TestNextTLVAliasing(t *testing.T) {
	buf := bytes.Clone(tlvArea)
	tl, _, err := stamp.NextTLV(buf)
	if err != nil {
		t.Fatal(err)
	}
	if cap(tl.Value) != len(tl.Value) {
		t.Errorf("cap(Value) = %d, want %d (appending must not clobber the next TLV)", cap(tl.Value), len(tl.Value))
	}
	tl.Value[0] = 0x11
	if buf[4] != 0x11 {
		t.Error("Value does not alias the buffer")
	}
	_ = append(tl.Value, 0xEE)
	if buf[7] != 0x00 {
		t.Error("append to Value overwrote the next TLV")
	}
}

func TestNextTLVErrors(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		malformed bool
	}{
		{"empty", []byte{}, false},
		{"nil", nil, false},
		{"1 octet header", []byte{0x80}, true},
		{"3 octet header", []byte{0x80, 0x04, 0x00}, true},
		{"value one short", []byte{0x80, 0x04, 0x00, 0x04, 1, 2, 3}, true},
		{"length 0xFFFF", []byte{0x00, 0x01, 0xFF, 0xFF, 0}, true},
		{"header only, length 1", []byte{0x00, 0x01, 0x00, 0x01}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl, rest, err := stamp.NextTLV(tc.in)
			if !errors.Is(err, stamp.ErrTooShort) {
				t.Errorf("err = %v, want ErrTooShort", err)
			}
			if errors.Is(err, stamp.ErrMalformedTLV) != tc.malformed {
				t.Errorf("err = %v, malformed = %v, want %v", err, !tc.malformed, tc.malformed)
			}
			if errors.Is(err, stamp.ErrBadHMAC) || errors.Is(err, stamp.ErrFieldRange) {
				t.Errorf("err = %v matches an unrelated sentinel", err)
			}
			if tl.Flags != 0 || tl.Type != 0 || tl.Value != nil {
				t.Errorf("TLV = %+v, want zero", tl)
			}
			if len(rest) != len(tc.in) {
				t.Errorf("rest has %d octets, want the input's %d", len(rest), len(tc.in))
			}
		})
	}

	// Well-formed TLVs followed by truncated ones: iteration yields the good
	// ones, then a malformed error.
	for _, tail := range [][]byte{
		{0x80},
		{0x80, 0x01},
		{0x80, 0x01, 0x00},
		{0x80, 0x01, 0x00, 0x05, 1, 2, 3, 4},
	} {
		area := append(bytes.Clone(tlvArea), tail...)
		n := 0
		var err error
		for rest := area; len(rest) > 0; n++ {
			if _, rest, err = stamp.NextTLV(rest); err != nil {
				break
			}
		}
		if n != len(tlvAreaWant) || !errors.Is(err, stamp.ErrMalformedTLV) {
			t.Errorf("tail % x: %d good TLVs, err %v; want %d and ErrMalformedTLV", tail, n, err, len(tlvAreaWant))
		}
	}
}

func TestAppendTLV(t *testing.T) {
	var b []byte
	for _, tl := range tlvAreaWant {
		b = stamp.AppendTLV(b, tl.Flags, tl.Type, tl.Value)
	}
	if !bytes.Equal(b, tlvArea) {
		t.Errorf("AppendTLV:\n got % x\nwant % x", b, tlvArea)
	}

	// Appends after existing content, e.g. a base packet.
	pkt := stamp.AppendTLV(bytes.Clone(senderWire), stamp.TLVFlagU, stamp.TLVExtraPadding, []byte{0, 0})
	want := append(bytes.Clone(senderWire), 0x80, 0x01, 0x00, 0x02, 0x00, 0x00)
	if !bytes.Equal(pkt, want) {
		t.Errorf("AppendTLV after packet: % x", pkt[40:])
	}

	// The largest Value fits; the Length is big-endian.
	big := stamp.AppendTLV(nil, 0, stamp.TLVExtraPadding, make([]byte, stamp.MaxTLVValueLen))
	if len(big) != 4+0xFFFF || big[2] != 0xFF || big[3] != 0xFF {
		t.Errorf("max-length TLV: len %d header % x", len(big), big[:4])
	}
	tl, rest, err := stamp.NextTLV(big)
	if err != nil || len(tl.Value) != 0xFFFF || len(rest) != 0 {
		t.Errorf("NextTLV(max) = %d octets, rest %d, %v", len(tl.Value), len(rest), err)
	}
	mid := stamp.AppendTLV(nil, 0, 9, make([]byte, 0x0102))
	if mid[2] != 0x01 || mid[3] != 0x02 {
		t.Errorf("Length 0x0102 encoded as % x", mid[2:4])
	}

	defer func() {
		if recover() == nil {
			t.Error("AppendTLV with a 65536-octet value did not panic")
		}
	}()
	stamp.AppendTLV(nil, 0, stamp.TLVExtraPadding, make([]byte, stamp.MaxTLVValueLen+1))
}

func TestFindTLV(t *testing.T) {
	pkt := append(bytes.Clone(senderWire), tlvArea...)
	area := pkt[stamp.SenderPacketLen:]

	tl, ok := stamp.FindTLV(area, stamp.TLVClassOfService)
	if !ok || !tlvEqual(tl, tlvAreaWant[1]) {
		t.Errorf("FindTLV(CoS) = %+v, %v; want the first CoS TLV", tl, ok)
	}
	tl, ok = stamp.FindTLV(area, stamp.TLVHMAC)
	if !ok || !tlvEqual(tl, tlvAreaWant[4]) {
		t.Errorf("FindTLV(HMAC) = %+v, %v", tl, ok)
	}
	tl, ok = stamp.FindTLV(area, 200)
	if !ok || tl.Flags != 0xF0 || len(tl.Value) != 0 {
		t.Errorf("FindTLV(200) = %+v, %v", tl, ok)
	}
	for _, typ := range []uint8{0, stamp.TLVLocation, stamp.TLVFollowUpTelemetry, 255} {
		if tl, ok := stamp.FindTLV(area, typ); ok || tl.Value != nil || tl.Type != 0 {
			t.Errorf("FindTLV(%d) = %+v, %v; want absent", typ, tl, ok)
		}
	}
	if _, ok := stamp.FindTLV(nil, stamp.TLVExtraPadding); ok {
		t.Error("FindTLV(nil) found something")
	}

	// A TLV behind a malformed one is not found: processing stops at the
	// malformed TLV (RFC 8972 §4).
	// Extra Padding claiming 255 octets where only 49 remain.
	bad := append([]byte{0x80, 0x01, 0x00, 0xFF, 0, 0}, tlvArea...)
	if _, ok := stamp.FindTLV(bad, stamp.TLVClassOfService); ok {
		t.Error("FindTLV found a TLV after a malformed one")
	}
	// But one before a malformed TLV is.
	tail := append(bytes.Clone(tlvArea[:7]), 0x00, 0x04, 0x00)
	if tl, ok := stamp.FindTLV(tail, stamp.TLVExtraPadding); !ok || !tlvEqual(tl, tlvAreaWant[0]) {
		t.Errorf("FindTLV before malformed = %+v, %v", tl, ok)
	}
	if _, ok := stamp.FindTLV(tail, stamp.TLVClassOfService); ok {
		t.Error("FindTLV returned a truncated TLV")
	}
}

func TestClassOfServiceWire(t *testing.T) {
	// Hand-built values, bit by bit from RFC 8972 §4.4:
	// DSCP1 (6) | DSCP2 (6) | ECN (2) | RP (2) | Reserved (16).
	tests := []struct {
		name string
		wire []byte
		cos  stamp.ClassOfService
	}{
		// 101110 001010 11 01 0...0 = B8 AD 00 00
		{"reflected EF/AF11 ECN=CE RP=1", []byte{0xB8, 0xAD, 0x00, 0x00},
			stamp.ClassOfService{DSCP1: 46, DSCP2: 10, ECN: 3, RP: stamp.CoSRPRejected}},
		// 100010 000000 00 00 = 88 00 00 00: what a sender asking for AF41 sends.
		{"sender request AF41", []byte{0x88, 0x00, 0x00, 0x00},
			stamp.ClassOfService{DSCP1: 34}},
		// DSCP2 = 110000 straddles the octet boundary: 000000 11|0000 00 00.
		{"DSCP2 high bits", []byte{0x03, 0x00, 0x00, 0x00},
			stamp.ClassOfService{DSCP2: 0x30}},
		// DSCP2 = 000001: 000000 00|0001 00 00.
		{"DSCP2 low bit", []byte{0x00, 0x10, 0x00, 0x00},
			stamp.ClassOfService{DSCP2: 1}},
		{"ECN only", []byte{0x00, 0x04, 0x00, 0x00}, stamp.ClassOfService{ECN: 1}},
		{"RP=2", []byte{0x00, 0x02, 0x00, 0x00}, stamp.ClassOfService{RP: 2}},
		{"all ones", []byte{0xFF, 0xFF, 0x00, 0x00},
			stamp.ClassOfService{DSCP1: 63, DSCP2: 63, ECN: 3, RP: 3}},
		{"zero", []byte{0, 0, 0, 0}, stamp.ClassOfService{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c stamp.ClassOfService
			if err := c.UnmarshalBinary(tc.wire); err != nil || c != tc.cos {
				t.Errorf("UnmarshalBinary = %+v, %v; want %+v", c, err, tc.cos)
			}
			// Reserved octets are ignored on receipt.
			res := append(bytes.Clone(tc.wire[:2]), 0xFF, 0xA5)
			if err := c.UnmarshalBinary(res); err != nil || c != tc.cos {
				t.Errorf("UnmarshalBinary(reserved set) = %+v, %v", c, err)
			}
			buf := []byte{0x55, 0x55, 0x55, 0x55, 0x55}
			n, err := tc.cos.MarshalTo(buf)
			if err != nil || n != stamp.ClassOfServiceLen || !bytes.Equal(buf[:4], tc.wire) || buf[4] != 0x55 {
				t.Errorf("MarshalTo = %d, %v, % x; want % x", n, err, buf, tc.wire)
			}
		})
	}

	// Inside a whole packet: base packet, Extra Padding, then the CoS TLV.
	pkt := append(bytes.Clone(reflectorWire),
		0x00, 0x01, 0x00, 0x02, 0x00, 0x00, // Extra Padding, 2 octets
		0x00, 0x04, 0x00, 0x04, 0xB8, 0xAD, 0x00, 0x00, // CoS
	)
	tl, ok := stamp.FindTLV(pkt[stamp.ReflectorPacketLen:], stamp.TLVClassOfService)
	var c stamp.ClassOfService
	if !ok || c.UnmarshalBinary(tl.Value) != nil || c != tests[0].cos {
		t.Errorf("CoS in packet: %+v %v -> %+v", tl, ok, c)
	}
}

func TestClassOfServiceErrors(t *testing.T) {
	orig := stamp.ClassOfService{DSCP1: 1, DSCP2: 2, ECN: 3, RP: 1}
	for _, n := range []int{0, 1, 3} {
		c := orig
		err := c.UnmarshalBinary(make([]byte, n))
		if !errors.Is(err, stamp.ErrTooShort) || !errors.Is(err, stamp.ErrMalformedTLV) || c != orig {
			t.Errorf("UnmarshalBinary(%d octets) = %v, %+v", n, err, c)
		}
	}
	for _, n := range []int{5, 16} {
		c := orig
		err := c.UnmarshalBinary(make([]byte, n))
		if errors.Is(err, stamp.ErrTooShort) || !errors.Is(err, stamp.ErrMalformedTLV) || c != orig {
			t.Errorf("UnmarshalBinary(%d octets) = %v, %+v", n, err, c)
		}
	}
	buf := []byte{9, 9, 9}
	if n, err := orig.MarshalTo(buf); n != 0 || !errors.Is(err, stamp.ErrTooShort) || !bytes.Equal(buf, []byte{9, 9, 9}) {
		t.Errorf("MarshalTo(3 octets) = %d, %v, % x", n, err, buf)
	}
	for _, bad := range []stamp.ClassOfService{{DSCP1: 64}, {DSCP2: 64}, {ECN: 4}, {RP: 4}, {DSCP1: 255}} {
		buf := []byte{9, 9, 9, 9}
		n, err := bad.MarshalTo(buf)
		if n != 0 || !errors.Is(err, stamp.ErrFieldRange) || errors.Is(err, stamp.ErrTooShort) || !bytes.Equal(buf, []byte{9, 9, 9, 9}) {
			t.Errorf("MarshalTo(%+v) = %d, %v, % x", bad, n, err, buf)
		}
	}
}

// TestClassOfServiceRoundTrip checks all 2^16 values of the first two
// octets.
func TestClassOfServiceRoundTrip(t *testing.T) {
	var out [4]byte
	for v := range 1 << 16 {
		in := []byte{byte(v >> 8), byte(v), 0x12, 0x34}
		var c stamp.ClassOfService
		if err := c.UnmarshalBinary(in); err != nil {
			t.Fatal(err)
		}
		if _, err := c.MarshalTo(out[:]); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if out != [4]byte{in[0], in[1], 0, 0} {
			t.Fatalf("round trip % x -> %+v -> % x", in, c, out)
		}
	}
}

var (
	sinkTLV  stamp.TLV
	sinkBool bool
	sinkErr  error
	sinkN    int
)

func TestTLVZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	area := bytes.Clone(tlvArea)
	appendBuf := make([]byte, 0, 64)
	cosBuf := make([]byte, 4)
	cos := stamp.ClassOfService{DSCP1: 46, DSCP2: 10, ECN: 3, RP: 1}
	var cos2 stamp.ClassOfService
	cases := []struct {
		name string
		fn   func()
	}{
		{"NextTLV", func() { sinkTLV, _, sinkErr = stamp.NextTLV(area) }},
		{"NextTLV loop", func() {
			for rest := area; len(rest) > 0; {
				sinkTLV, rest, sinkErr = stamp.NextTLV(rest)
			}
		}},
		{"NextTLV error", func() { sinkTLV, _, sinkErr = stamp.NextTLV(area[:3]) }},
		{"NextTLV empty", func() { sinkTLV, _, sinkErr = stamp.NextTLV(nil) }},
		{"FindTLV hit", func() { sinkTLV, sinkBool = stamp.FindTLV(area, stamp.TLVHMAC) }},
		{"FindTLV miss", func() { sinkTLV, sinkBool = stamp.FindTLV(area, stamp.TLVLocation) }},
		{"AppendTLV", func() { appendBuf = stamp.AppendTLV(appendBuf[:0], 0x80, 1, area[:8]) }},
		{"ClassOfService.MarshalTo", func() { sinkN, sinkErr = cos.MarshalTo(cosBuf) }},
		{"ClassOfService.UnmarshalBinary", func() { sinkErr = cos2.UnmarshalBinary(cosBuf) }},
		{"ClassOfService.UnmarshalBinary error", func() { sinkErr = cos2.UnmarshalBinary(cosBuf[:2]) }},
		{"ClassOfService.MarshalTo error", func() { sinkN, sinkErr = (&stamp.ClassOfService{ECN: 9}).MarshalTo(cosBuf) }},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(1000, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, n)
		}
	}
}

func BenchmarkNextTLVIterate(b *testing.B) {
	b.ReportAllocs()
	pkt := append(bytes.Clone(senderWire), tlvArea...)
	b.SetBytes(int64(len(tlvArea)))
	for b.Loop() {
		for rest := pkt[stamp.SenderPacketLen:]; len(rest) > 0; {
			var err error
			if sinkTLV, rest, err = stamp.NextTLV(rest); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkFindTLV(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if sinkTLV, sinkBool = stamp.FindTLV(tlvArea, stamp.TLVHMAC); !sinkBool {
			b.Fatal("not found")
		}
	}
}

func BenchmarkAppendTLV(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 128)
	val := make([]byte, 16)
	for b.Loop() {
		buf = stamp.AppendTLV(buf[:0], stamp.TLVFlagU, stamp.TLVHMAC, val)
	}
}

func BenchmarkClassOfServiceMarshalTo(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 4)
	c := stamp.ClassOfService{DSCP1: 46}
	for b.Loop() {
		if _, err := c.MarshalTo(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClassOfServiceUnmarshalBinary(b *testing.B) {
	b.ReportAllocs()
	var c stamp.ClassOfService
	v := []byte{0xB8, 0xAD, 0, 0}
	for b.Loop() {
		if err := c.UnmarshalBinary(v); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzTLVs(f *testing.F) {
	f.Add(tlvArea)
	f.Add(append(bytes.Clone(tlvArea), 0x80, 0x04))
	f.Add(append(bytes.Clone(tlvArea), 0x80, 0x04, 0x00, 0x08, 1, 2))
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x00, 0x04, 0x00, 0x04, 0xB8, 0xAD, 0xFF, 0xFF})
	f.Add([]byte{0x00, 0x04, 0x00, 0x03, 0xB8, 0xAD, 0xFF})
	f.Add([]byte{0x00, 0x04, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Reference: iterate with NextTLV, remembering the first TLV of each
		// type before the first error.
		var first [256]*stamp.TLV
		var rebuilt []byte
		rest := data
		for len(rest) > 0 {
			tl, r, err := stamp.NextTLV(rest)
			if err != nil {
				if !errors.Is(err, stamp.ErrTooShort) || !errors.Is(err, stamp.ErrMalformedTLV) {
					t.Fatalf("NextTLV error %v does not match ErrTooShort and ErrMalformedTLV", err)
				}
				if len(r) != len(rest) || tl.Value != nil {
					t.Fatalf("NextTLV failed but consumed input or returned a TLV")
				}
				break
			}
			if tl.Len() < stamp.TLVHeaderLen || tl.Len() > len(rest) || len(r) != len(rest)-tl.Len() {
				t.Fatalf("NextTLV: Len %d, rest %d of %d", tl.Len(), len(r), len(rest))
			}
			if cap(tl.Value) != len(tl.Value) {
				t.Fatalf("cap(Value) %d != len %d", cap(tl.Value), len(tl.Value))
			}
			if first[tl.Type] == nil {
				first[tl.Type] = &tl
			}
			rebuilt = stamp.AppendTLV(rebuilt, tl.Flags, tl.Type, tl.Value)
			rest = r
		}
		// Re-encoding the parsed TLVs reproduces the consumed prefix.
		if !bytes.Equal(rebuilt, data[:len(data)-len(rest)]) {
			t.Fatalf("re-encode:\n got % x\nwant % x", rebuilt, data[:len(data)-len(rest)])
		}
		for typ := range 256 {
			tl, ok := stamp.FindTLV(data, uint8(typ))
			want := first[typ]
			if ok != (want != nil) {
				t.Fatalf("FindTLV(%d) found=%v, iteration found=%v", typ, ok, want != nil)
			}
			if ok && !tlvEqual(tl, *want) {
				t.Fatalf("FindTLV(%d) = %+v, iteration gave %+v", typ, tl, *want)
			}
			if ok && len(tl.Value) > 0 && &tl.Value[0] != &want.Value[0] {
				t.Fatalf("FindTLV(%d) returned a Value not aliasing the input", typ)
			}
		}
		// Any Class of Service TLV found decodes iff its Value is 4 octets,
		// and re-encodes with Reserved cleared.
		if tl, ok := stamp.FindTLV(data, stamp.TLVClassOfService); ok {
			var c stamp.ClassOfService
			err := c.UnmarshalBinary(tl.Value)
			if (err == nil) != (len(tl.Value) == stamp.ClassOfServiceLen) {
				t.Fatalf("UnmarshalBinary(%d octets) = %v", len(tl.Value), err)
			}
			if err == nil {
				var out [4]byte
				if _, err := c.MarshalTo(out[:]); err != nil {
					t.Fatal(err)
				}
				if out != [4]byte{tl.Value[0], tl.Value[1], 0, 0} {
					t.Fatalf("CoS re-encode % x -> % x", tl.Value, out)
				}
			} else if !errors.Is(err, stamp.ErrMalformedTLV) {
				t.Fatalf("CoS error %v is not ErrMalformedTLV", err)
			}
		}
	})
}
