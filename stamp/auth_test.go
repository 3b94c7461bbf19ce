package stamp_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/llama-exporter/llama_exporter/stamp"
)

var authKey = []byte("0123456789abcdef0123456789abcdef") // 32 octets

// Hand-built 96-octet prefixes (the part the HMAC covers) of authenticated
// packets, written out field by field from RFC 8762 §4.2.2 / §4.3.2 with the
// SSID of RFC 8972 §3. They carry the same field values as senderWire /
// reflectorWire (senderWant / reflectorWant).
var senderAuthPrefix = concat(
	[]byte{0x01, 0x02, 0x03, 0x04},                         // 0  Sequence Number
	make([]byte, 12),                                       // 4  MBZ
	[]byte{0x83, 0xAA, 0x7E, 0x80, 0x80, 0x00, 0x00, 0x00}, // 16 Timestamp
	[]byte{0x81, 0x02},                                     // 24 Error Estimate
	[]byte{0xBE, 0xEF},                                     // 26 SSID
	make([]byte, 68),                                       // 28 MBZ
)

var reflectorAuthPrefix = concat(
	[]byte{0xA0, 0xB0, 0xC0, 0xD0},                         // 0  Sequence Number
	make([]byte, 12),                                       // 4  MBZ
	[]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}, // 16 Timestamp T3
	[]byte{0x0A, 0x05},                                     // 24 Error Estimate
	[]byte{0x12, 0x34},                                     // 26 SSID
	make([]byte, 4),                                        // 28 MBZ
	[]byte{0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00}, // 32 Receive Timestamp T2
	make([]byte, 8),                                        // 40 MBZ
	[]byte{0x00, 0x00, 0x00, 0x07},                         // 48 Session-Sender Sequence Number
	make([]byte, 12),                                       // 52 MBZ
	[]byte{0x11, 0x22, 0x33, 0x43, 0x80, 0x00, 0x00, 0x00}, // 64 Session-Sender Timestamp T1
	[]byte{0xC0, 0x01},                                     // 72 Session-Sender Error Estimate
	make([]byte, 6),                                        // 74 MBZ
	[]byte{0x40},                                           // 80 Session-Sender TTL
	make([]byte, 15),                                       // 81 MBZ
)

// MBZ octet offsets of the authenticated packets.
var (
	senderAuthMBZ    = append(rangeInts(4, 16), rangeInts(28, 96)...)
	reflectorAuthMBZ = concatInts(rangeInts(4, 16), rangeInts(28, 32), rangeInts(40, 48),
		rangeInts(52, 64), rangeInts(74, 80), rangeInts(81, 96))
)

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func concatInts(parts ...[]int) []int {
	var r []int
	for _, p := range parts {
		r = append(r, p...)
	}
	return r
}

// refHMAC computes HMAC-SHA-256 truncated to 16 octets directly with
// crypto/hmac, independently of the package.
func refHMAC(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)[:16]
}

// sealed returns prefix (96 octets) followed by its reference HMAC.
func sealed(key, prefix []byte) []byte {
	return concat(prefix, refHMAC(key, prefix))
}

func TestAuthWireLayout(t *testing.T) {
	if len(senderAuthPrefix) != 96 || len(reflectorAuthPrefix) != 96 {
		t.Fatalf("prefixes have %d and %d octets, want 96", len(senderAuthPrefix), len(reflectorAuthPrefix))
	}
	if stamp.AuthSenderPacketLen != 112 || stamp.AuthReflectorPacketLen != 112 ||
		stamp.HMACLen != 16 || stamp.AuthHMACOffset != 96 {
		t.Fatal("authenticated packet constants differ from RFC 8762 §4.2.2/§4.3.2/§4.4")
	}
	if len(senderAuthMBZ) != 12+68 || len(reflectorAuthMBZ) != 12+4+8+12+6+15 {
		t.Fatalf("MBZ tables: %d, %d", len(senderAuthMBZ), len(reflectorAuthMBZ))
	}
}

func TestSenderAuth(t *testing.T) {
	wire := sealed(authKey, senderAuthPrefix)

	var p stamp.SenderPacket
	if err := p.UnmarshalAuth(wire, authKey); err != nil || p != senderWant {
		t.Fatalf("UnmarshalAuth = %+v, %v; want %+v", p, err, senderWant)
	}
	a := stamp.NewAuthenticator(authKey)
	p = stamp.SenderPacket{}
	if err := p.UnmarshalAuthWith(wire, a); err != nil || p != senderWant {
		t.Fatalf("UnmarshalAuthWith = %+v, %v", p, err)
	}

	// Encoding reproduces the hand-built bytes and leaves b[112:] alone.
	buf := bytes.Repeat([]byte{0xAA}, 120)
	n, err := senderWant.MarshalAuthTo(buf, authKey)
	if err != nil || n != stamp.AuthSenderPacketLen {
		t.Fatalf("MarshalAuthTo = %d, %v", n, err)
	}
	if !bytes.Equal(buf[:112], wire) {
		t.Errorf("MarshalAuthTo:\n got % x\nwant % x", buf[:112], wire)
	}
	if !bytes.Equal(buf[112:], bytes.Repeat([]byte{0xAA}, 8)) {
		t.Errorf("MarshalAuthTo touched b[112:]: % x", buf[112:])
	}
	buf2 := bytes.Repeat([]byte{0x55}, 112)
	if n, err := senderWant.MarshalAuthWith(buf2, a); err != nil || n != 112 || !bytes.Equal(buf2, wire) {
		t.Errorf("MarshalAuthWith = %d, %v, % x", n, err, buf2)
	}

	// Trailing octets (TLVs) are neither covered nor interpreted.
	ext := append(bytes.Clone(wire), 0x80, 0x01, 0x00, 0x00, 0xFF)
	if err := p.UnmarshalAuth(ext, authKey); err != nil || p != senderWant {
		t.Errorf("UnmarshalAuth with trailing TLV = %+v, %v", p, err)
	}

	// Non-zero MBZ covered by a valid HMAC is accepted and ignored.
	mbz := sealed(authKey, withMBZ(senderAuthPrefix, senderAuthMBZ, 0xFF))
	p = stamp.SenderPacket{}
	if err := p.UnmarshalAuth(mbz, authKey); err != nil || p != senderWant {
		t.Errorf("UnmarshalAuth with MBZ set = %+v, %v", p, err)
	}
}

func TestReflectorAuth(t *testing.T) {
	wire := sealed(authKey, reflectorAuthPrefix)

	var p stamp.ReflectorPacket
	if err := p.UnmarshalAuth(wire, authKey); err != nil || p != reflectorWant {
		t.Fatalf("UnmarshalAuth = %+v, %v; want %+v", p, err, reflectorWant)
	}
	a := stamp.NewAuthenticator(authKey)
	p = stamp.ReflectorPacket{}
	if err := p.UnmarshalAuthWith(wire, a); err != nil || p != reflectorWant {
		t.Fatalf("UnmarshalAuthWith = %+v, %v", p, err)
	}

	buf := bytes.Repeat([]byte{0xAA}, 130)
	n, err := reflectorWant.MarshalAuthTo(buf, authKey)
	if err != nil || n != stamp.AuthReflectorPacketLen {
		t.Fatalf("MarshalAuthTo = %d, %v", n, err)
	}
	if !bytes.Equal(buf[:112], wire) {
		t.Errorf("MarshalAuthTo:\n got % x\nwant % x", buf[:112], wire)
	}
	if !bytes.Equal(buf[112:], bytes.Repeat([]byte{0xAA}, 18)) {
		t.Errorf("MarshalAuthTo touched b[112:]: % x", buf[112:])
	}
	buf2 := bytes.Repeat([]byte{0x55}, 112)
	if n, err := reflectorWant.MarshalAuthWith(buf2, a); err != nil || n != 112 || !bytes.Equal(buf2, wire) {
		t.Errorf("MarshalAuthWith = %d, %v, % x", n, err, buf2)
	}

	ext := append(bytes.Clone(wire), tlvArea...)
	if err := p.UnmarshalAuth(ext, authKey); err != nil || p != reflectorWant {
		t.Errorf("UnmarshalAuth with trailing TLVs = %+v, %v", p, err)
	}
	if tl, ok := stamp.FindTLV(ext[stamp.AuthReflectorPacketLen:], stamp.TLVHMAC); !ok || len(tl.Value) != 16 {
		t.Errorf("FindTLV after authenticated packet = %+v, %v", tl, ok)
	}

	mbz := sealed(authKey, withMBZ(reflectorAuthPrefix, reflectorAuthMBZ, 0xFF))
	p = stamp.ReflectorPacket{}
	if err := p.UnmarshalAuth(mbz, authKey); err != nil || p != reflectorWant {
		t.Errorf("UnmarshalAuth with MBZ set = %+v, %v", p, err)
	}
}

// TestAuthBitFlip flips every bit of both authenticated packets, including
// the HMAC itself, and expects ErrBadHMAC with the packet left unchanged.
func TestAuthBitFlip(t *testing.T) {
	a := stamp.NewAuthenticator(authKey)
	for _, kind := range []string{"sender", "reflector"} {
		prefix := senderAuthPrefix
		if kind == "reflector" {
			prefix = reflectorAuthPrefix
		}
		wire := sealed(authKey, prefix)
		for bit := range 112 * 8 {
			b := bytes.Clone(wire)
			b[bit/8] ^= 1 << (bit % 8)
			var errKey, errWith, errVerify error
			if kind == "sender" {
				p := senderWant
				errKey = p.UnmarshalAuth(b, authKey)
				errWith = p.UnmarshalAuthWith(b, a)
				if p != senderWant {
					t.Fatalf("sender bit %d: packet modified", bit)
				}
			} else {
				p := reflectorWant
				errKey = p.UnmarshalAuth(b, authKey)
				errWith = p.UnmarshalAuthWith(b, a)
				if p != reflectorWant {
					t.Fatalf("reflector bit %d: packet modified", bit)
				}
			}
			errVerify = a.Verify(b)
			for _, err := range []error{errKey, errWith, errVerify} {
				if !errors.Is(err, stamp.ErrBadHMAC) || errors.Is(err, stamp.ErrTooShort) {
					t.Fatalf("%s bit %d flipped: %v, want ErrBadHMAC", kind, bit, err)
				}
			}
		}
	}
}

func TestAuthWrongKey(t *testing.T) {
	flipped := bytes.Clone(authKey)
	flipped[31] ^= 0x01
	keys := map[string][]byte{
		"one bit off":   flipped,
		"empty":         nil,
		"prefix":        authKey[:31],
		"longer":        append(bytes.Clone(authKey), 1), // (a trailing 0x00 would be equivalent: HMAC zero-pads keys)
		"other 64-byte": bytes.Repeat([]byte{0x5C}, 64),
	}
	sw := sealed(authKey, senderAuthPrefix)
	rw := sealed(authKey, reflectorAuthPrefix)
	for name, k := range keys {
		var s stamp.SenderPacket
		if err := s.UnmarshalAuth(sw, k); !errors.Is(err, stamp.ErrBadHMAC) {
			t.Errorf("sender, key %s: %v", name, err)
		}
		var r stamp.ReflectorPacket
		if err := r.UnmarshalAuth(rw, k); !errors.Is(err, stamp.ErrBadHMAC) {
			t.Errorf("reflector, key %s: %v", name, err)
		}
		if err := stamp.NewAuthenticator(k).Verify(sw); !errors.Is(err, stamp.ErrBadHMAC) {
			t.Errorf("Verify, key %s: %v", name, err)
		}
	}
	// Keys of any length, including ones longer than the SHA-256 block
	// (hashed first by HMAC), agree with crypto/hmac.
	for _, n := range []int{0, 1, 16, 32, 63, 64, 65, 100, 200} {
		k := bytes.Repeat([]byte{byte(n)}, n)
		buf := make([]byte, 112)
		if _, err := senderWant.MarshalAuthTo(buf, k); err != nil {
			t.Fatal(err)
		}
		if want := sealed(k, senderAuthPrefix); !bytes.Equal(buf, want) {
			t.Errorf("%d-octet key: HMAC % x, want % x", n, buf[96:], want[96:])
		}
	}
}

func TestAuthenticatorSealVerify(t *testing.T) {
	a := stamp.NewAuthenticator(authKey)
	b := concat(reflectorAuthPrefix, bytes.Repeat([]byte{0xEE}, 16), []byte{1, 2, 3})
	if err := a.Verify(b); !errors.Is(err, stamp.ErrBadHMAC) {
		t.Errorf("Verify before Seal = %v", err)
	}
	if err := a.Seal(b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:112], sealed(authKey, reflectorAuthPrefix)) || !bytes.Equal(b[112:], []byte{1, 2, 3}) {
		t.Errorf("Seal: % x", b)
	}
	if err := a.Verify(b); err != nil {
		t.Errorf("Verify after Seal = %v", err)
	}
	// Reuse across many packets gives the same results as a fresh HMAC.
	r := rand.New(rand.NewPCG(9, 10))
	for range 200 {
		pkt := make([]byte, 112)
		for i := range pkt {
			pkt[i] = byte(r.Uint32())
		}
		if err := a.Seal(pkt); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pkt[96:], refHMAC(authKey, pkt[:96])) {
			t.Fatalf("Seal disagrees with crypto/hmac for % x", pkt[:96])
		}
		if err := a.Verify(pkt); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAuthShortBuffers(t *testing.T) {
	a := stamp.NewAuthenticator(authKey)
	full := sealed(authKey, reflectorAuthPrefix)
	for _, n := range []int{0, 1, 44, 95, 96, 111} {
		b := bytes.Clone(full[:n])
		orig := bytes.Clone(b)
		errs := map[string]error{}
		s := senderWant
		errs["sender UnmarshalAuth"] = s.UnmarshalAuth(b, authKey)
		errs["sender UnmarshalAuthWith"] = s.UnmarshalAuthWith(b, a)
		if s != senderWant {
			t.Errorf("%d octets: sender packet modified", n)
		}
		r := reflectorWant
		errs["reflector UnmarshalAuth"] = r.UnmarshalAuth(b, authKey)
		errs["reflector UnmarshalAuthWith"] = r.UnmarshalAuthWith(b, a)
		if r != reflectorWant {
			t.Errorf("%d octets: reflector packet modified", n)
		}
		var w int
		w, errs["sender MarshalAuthTo"] = senderWant.MarshalAuthTo(b, authKey)
		if w != 0 {
			t.Errorf("%d octets: sender MarshalAuthTo wrote %d", n, w)
		}
		w, errs["sender MarshalAuthWith"] = senderWant.MarshalAuthWith(b, a)
		if w != 0 {
			t.Errorf("%d octets: sender MarshalAuthWith wrote %d", n, w)
		}
		w, errs["reflector MarshalAuthTo"] = reflectorWant.MarshalAuthTo(b, authKey)
		if w != 0 {
			t.Errorf("%d octets: reflector MarshalAuthTo wrote %d", n, w)
		}
		w, errs["reflector MarshalAuthWith"] = reflectorWant.MarshalAuthWith(b, a)
		if w != 0 {
			t.Errorf("%d octets: reflector MarshalAuthWith wrote %d", n, w)
		}
		errs["Seal"] = a.Seal(b)
		errs["Verify"] = a.Verify(b)
		for name, err := range errs {
			if !errors.Is(err, stamp.ErrTooShort) || errors.Is(err, stamp.ErrBadHMAC) {
				t.Errorf("%s(%d octets) = %v, want ErrTooShort", name, n, err)
			}
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("%d octets: short buffer was written", n)
		}
	}
}

func TestAuthRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	a := stamp.NewAuthenticator(authKey)
	buf := make([]byte, 112)
	for range 1000 {
		s := stamp.SenderPacket{
			Sequence:      r.Uint32(),
			Timestamp:     stamp.Timestamp(r.Uint64()),
			ErrorEstimate: stamp.ErrorEstimate(r.Uint32()),
			SSID:          uint16(r.Uint32()),
		}
		if _, err := s.MarshalAuthWith(buf, a); err != nil {
			t.Fatal(err)
		}
		for _, o := range senderAuthMBZ {
			if buf[o] != 0 {
				t.Fatalf("sender MBZ octet %d = %#x", o, buf[o])
			}
		}
		var s2 stamp.SenderPacket
		if err := s2.UnmarshalAuth(buf, authKey); err != nil || s2 != s {
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
		for i := range buf {
			buf[i] = 0xFF // MBZ must be cleared by the encoder
		}
		if _, err := p.MarshalAuthWith(buf, a); err != nil {
			t.Fatal(err)
		}
		for _, o := range reflectorAuthMBZ {
			if buf[o] != 0 {
				t.Fatalf("reflector MBZ octet %d = %#x", o, buf[o])
			}
		}
		var p2 stamp.ReflectorPacket
		if err := p2.UnmarshalAuthWith(buf, a); err != nil || p2 != p {
			t.Fatalf("reflector round trip: %+v -> %+v, %v", p, p2, err)
		}
	}
}

func TestAuthZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	a := stamp.NewAuthenticator(authKey)
	sw := sealed(authKey, senderAuthPrefix)
	rw := sealed(authKey, reflectorAuthPrefix)
	bad := bytes.Clone(rw)
	bad[0] ^= 1
	buf := make([]byte, 112)
	s, r := senderWant, reflectorWant
	var s2 stamp.SenderPacket
	var r2 stamp.ReflectorPacket
	cases := []struct {
		name string
		fn   func()
	}{
		{"Authenticator.Seal", func() { sinkErr = a.Seal(buf) }},
		{"Authenticator.Verify", func() { sinkErr = a.Verify(sw) }},
		{"Authenticator.Verify bad", func() { sinkErr = a.Verify(bad) }},
		{"Authenticator.Verify short", func() { sinkErr = a.Verify(sw[:50]) }},
		{"SenderPacket.MarshalAuthWith", func() { sinkN, sinkErr = s.MarshalAuthWith(buf, a) }},
		{"SenderPacket.UnmarshalAuthWith", func() { sinkErr = s2.UnmarshalAuthWith(sw, a) }},
		{"ReflectorPacket.MarshalAuthWith", func() { sinkN, sinkErr = r.MarshalAuthWith(buf, a) }},
		{"ReflectorPacket.UnmarshalAuthWith", func() { sinkErr = r2.UnmarshalAuthWith(rw, a) }},
		{"ReflectorPacket.UnmarshalAuthWith bad", func() { sinkErr = r2.UnmarshalAuthWith(bad, a) }},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(1000, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, n)
		}
	}
}

func BenchmarkAuthenticatorSeal(b *testing.B) {
	b.ReportAllocs()
	a := stamp.NewAuthenticator(authKey)
	buf := sealed(authKey, senderAuthPrefix)
	for b.Loop() {
		if err := a.Seal(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticatorVerify(b *testing.B) {
	b.ReportAllocs()
	a := stamp.NewAuthenticator(authKey)
	buf := sealed(authKey, senderAuthPrefix)
	for b.Loop() {
		if err := a.Verify(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReflectorMarshalAuthWith(b *testing.B) {
	b.ReportAllocs()
	a := stamp.NewAuthenticator(authKey)
	buf := make([]byte, stamp.AuthReflectorPacketLen)
	p := reflectorWant
	for b.Loop() {
		p.Sequence++
		if _, err := p.MarshalAuthWith(buf, a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReflectorUnmarshalAuthWith(b *testing.B) {
	b.ReportAllocs()
	a := stamp.NewAuthenticator(authKey)
	wire := sealed(authKey, reflectorAuthPrefix)
	var p stamp.ReflectorPacket
	for b.Loop() {
		if err := p.UnmarshalAuthWith(wire, a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSenderMarshalAuthTo measures the convenience form that builds
// the HMAC state from the key on every call.
func BenchmarkSenderMarshalAuthTo(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, stamp.AuthSenderPacketLen)
	p := senderWant
	for b.Loop() {
		p.Sequence++
		if _, err := p.MarshalAuthTo(buf, authKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSenderUnmarshalAuth(b *testing.B) {
	b.ReportAllocs()
	wire := sealed(authKey, senderAuthPrefix)
	var p stamp.SenderPacket
	for b.Loop() {
		if err := p.UnmarshalAuth(wire, authKey); err != nil {
			b.Fatal(err)
		}
	}
}

// checkAuthFuzz is the shared body of the authenticated-packet fuzz
// targets. decode decodes with the fixed key and, if that succeeds,
// re-encodes the decoded packet into a fresh 112-octet slice.
func checkAuthFuzz(t *testing.T, data []byte, mbz []int, decode func([]byte) ([]byte, error)) {
	t.Helper()
	check := func(in []byte, mustAccept bool) {
		out, err := decode(in)
		switch {
		case len(in) < 112:
			if !errors.Is(err, stamp.ErrTooShort) {
				t.Fatalf("%d octets: %v, want ErrTooShort", len(in), err)
			}
			return
		case err != nil:
			if mustAccept || !errors.Is(err, stamp.ErrBadHMAC) {
				t.Fatalf("%d octets: %v", len(in), err)
			}
			return
		}
		// Accepted: the HMAC over in[:96] is right, so re-encoding must
		// give in[:96] with MBZ cleared, sealed with a valid HMAC.
		want := withMBZ(in[:96], mbz, 0)
		want = append(want, refHMAC(authKey, want)...)
		if !bytes.Equal(out, want) {
			t.Fatalf("re-encode:\n got % x\nwant % x", out, want)
		}
		if bytes.Equal(in[:96], want[:96]) && !bytes.Equal(in[:112], out) {
			t.Fatalf("MBZ-clean packet did not re-encode identically")
		}
	}
	// Arbitrary bytes: almost always rejected, must not panic.
	check(data, false)
	// The same bytes with a correct HMAC: must be accepted.
	if len(data) >= 112 {
		fixed := bytes.Clone(data)
		copy(fixed[96:112], refHMAC(authKey, fixed[:96]))
		check(fixed, true)
	}
}

func FuzzAuthSenderPacket(f *testing.F) {
	f.Add(sealed(authKey, senderAuthPrefix))
	f.Add(sealed(authKey, withMBZ(senderAuthPrefix, senderAuthMBZ, 0xFF)))
	f.Add(append(sealed(authKey, senderAuthPrefix), tlvArea...))
	f.Add(sealed(authKey, reflectorAuthPrefix))
	f.Add(senderAuthPrefix)
	f.Add([]byte{})
	f.Add(make([]byte, 112))
	f.Add(bytes.Repeat([]byte{0xFF}, 112))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAuthFuzz(t, data, senderAuthMBZ, func(in []byte) ([]byte, error) {
			var p stamp.SenderPacket
			if err := p.UnmarshalAuth(in, authKey); err != nil {
				if p != (stamp.SenderPacket{}) {
					t.Fatalf("rejected packet modified the struct: %+v", p)
				}
				return nil, err
			}
			out := make([]byte, 112)
			if _, err := p.MarshalAuthTo(out, authKey); err != nil {
				t.Fatal(err)
			}
			var q stamp.SenderPacket
			if err := q.UnmarshalAuth(out, authKey); err != nil || q != p {
				t.Fatalf("decode/encode/decode: %+v -> %+v, %v", p, q, err)
			}
			return out, nil
		})
	})
}

func FuzzAuthReflectorPacket(f *testing.F) {
	f.Add(sealed(authKey, reflectorAuthPrefix))
	f.Add(sealed(authKey, withMBZ(reflectorAuthPrefix, reflectorAuthMBZ, 0xFF)))
	f.Add(append(sealed(authKey, reflectorAuthPrefix), tlvArea...))
	f.Add(sealed(authKey, senderAuthPrefix))
	f.Add(reflectorAuthPrefix)
	f.Add([]byte{})
	f.Add(make([]byte, 112))
	f.Add(bytes.Repeat([]byte{0xFF}, 112))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAuthFuzz(t, data, reflectorAuthMBZ, func(in []byte) ([]byte, error) {
			var p stamp.ReflectorPacket
			if err := p.UnmarshalAuth(in, authKey); err != nil {
				if p != (stamp.ReflectorPacket{}) {
					t.Fatalf("rejected packet modified the struct: %+v", p)
				}
				return nil, err
			}
			out := make([]byte, 112)
			if _, err := p.MarshalAuthTo(out, authKey); err != nil {
				t.Fatal(err)
			}
			var q stamp.ReflectorPacket
			if err := q.UnmarshalAuth(out, authKey); err != nil || q != p {
				t.Fatalf("decode/encode/decode: %+v -> %+v, %v", p, q, err)
			}
			if p.Dwell() < 0 {
				t.Fatalf("Dwell < 0")
			}
			return out, nil
		})
	})
}

// MarshalAuthUnsealed followed by Seal gives what MarshalAuthWith gives, so
// a reflector can fill T3 last and compute the HMAC once.
func TestReflectorMarshalAuthUnsealedThenSeal(t *testing.T) {
	a := stamp.NewAuthenticator([]byte("key"))
	p := stamp.ReflectorPacket{Sequence: 3, Timestamp: 77, SSID: 9, ReceiveTimestamp: 70, SenderSequence: 5, SenderTTL: 61}
	want := make([]byte, stamp.AuthReflectorPacketLen)
	if _, err := p.MarshalAuthWith(want, a); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, stamp.AuthReflectorPacketLen)
	if _, err := p.MarshalAuthUnsealed(got); err != nil {
		t.Fatal(err)
	}
	if err := a.Seal(got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("unsealed+Seal\n%x\nMarshalAuthWith\n%x", got, want)
	}
	if _, err := p.MarshalAuthUnsealed(got[:111]); !errors.Is(err, stamp.ErrTooShort) {
		t.Fatalf("short buffer: %v", err)
	}
}
