package legacy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The probes below are written out octet by octet in the layout of Dropbox
// LLAMA's collector (gogo/protobuf marshal order, see the package comment),
// not produced by this package's encoder.

var (
	// sig is a signature as Dropbox makes them: the last ten octets of a
	// UUIDv4 (version nibble 4 in the first octet, variant bits 10 in the
	// third).
	sig = []byte{0x4c, 0x21, 0x9e, 0x07, 0x11, 0xd2, 0x33, 0xfe, 0x00, 0x8a}
	// sentNs is 2023-11-14T22:13:20.123456789Z in ns; sentVarint is its
	// base-128 varint, worked out by hand (nine octets).
	sentNs     = uint64(1700000000123456789)
	sentVarint = []byte{0x95, 0x9a, 0x97, 0xec, 0xe3, 0x9f, 0xe7, 0xcb, 0x17}
)

// cat concatenates octet strings.
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func sigField() []byte       { return cat([]byte{0x0a, 0x0a}, sig) }
func tosField(t byte) []byte { return []byte{0x12, 0x01, t} }
func sentField() []byte      { return cat([]byte{0x18}, sentVarint) }

// dropboxProbe is a 1028-octet probe exactly as Dropbox's collector sends
// it: signature, tos, sent and 1000 octets of zero padding.
func dropboxProbe(tos byte) []byte {
	return cat(sigField(), tosField(tos), sentField(), []byte{0x3a, 0xe8, 0x07}, make([]byte, 1000))
}

// stampSender is a 44-octet STAMP Session-Sender test packet (RFC 8762
// section 4.2.1, RFC 8972 SSID) written out by hand: sequence number, T1,
// error estimate, SSID and 28 octets of MBZ.
func stampSender(seq uint32, errEst, ssid uint16) []byte {
	b := make([]byte, 44)
	binary.BigEndian.PutUint32(b[0:], seq)
	binary.BigEndian.PutUint64(b[4:], 0xe8f1a2b3c4d5e6f7)
	binary.BigEndian.PutUint16(b[12:], errEst)
	binary.BigEndian.PutUint16(b[14:], ssid)
	return b
}

func wantSig() (s [SignatureLen]byte) {
	copy(s[:], sig)
	return s
}

func TestDropboxProbeIs1028Octets(t *testing.T) {
	if n := len(dropboxProbe(0)); n != WireSize {
		t.Fatalf("hand-built Dropbox probe is %d octets, want %d", n, WireSize)
	}
}

func TestUnmarshalAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Probe
	}{
		{"dropbox collector probe", dropboxProbe(0), Probe{Signature: wantSig(), Sent: sentNs}},
		{"tos EF (0xb8)", dropboxProbe(0xb8), Probe{Signature: wantSig(), TOS: 0xb8, Sent: sentNs}},
		{"no padding", cat(sigField(), tosField(0), sentField()), Probe{Signature: wantSig(), Sent: sentNs}},
		{"sent zero, omitted as in proto3", cat(sigField(), tosField(4), []byte{0x3a, 0x02, 0, 0}), Probe{Signature: wantSig(), TOS: 4}},
		{"sent zero, written explicitly", cat(sigField(), tosField(0), []byte{0x18, 0x00}), Probe{Signature: wantSig()}},
		{"fields out of order", cat([]byte{0x3a, 0x01, 0}, sentField(), tosField(0x20), sigField()), Probe{Signature: wantSig(), TOS: 0x20, Sent: sentNs}},
		{"UDProbe reply with rcvd", cat(sigField(), tosField(0), sentField(), []byte{0x20, 0x05}, []byte{0x3a, 0x03, 0, 0, 0}), Probe{Signature: wantSig(), Sent: sentNs, Rcvd: 5}},
		{"rtt and lost", cat(sigField(), tosField(0), []byte{0x28, 0x96, 0x01, 0x30, 0x01}), Probe{Signature: wantSig(), RTT: 150, Lost: true}},
		{"lost false written", cat(sigField(), tosField(0), []byte{0x30, 0x00}), Probe{Signature: wantSig()}},
		{"padding repeated", cat(sigField(), tosField(0), []byte{0x3a, 0x00, 0x3a, 0x02, 1, 2}), Probe{Signature: wantSig()}},
		{"non-zero padding", cat(sigField(), tosField(0), []byte{0x3a, 0x03, 'a', 'b', 'c'}), Probe{Signature: wantSig()}},
		{"non-minimal length varint", cat([]byte{0x0a, 0x8a, 0x00}, sig, tosField(0)), Probe{Signature: wantSig()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p Probe
			if err := p.UnmarshalBinary(tc.in); err != nil {
				t.Fatalf("UnmarshalBinary: %v\ninput % x", err, tc.in)
			}
			if p != tc.want {
				t.Errorf("decoded %+v, want %+v", p, tc.want)
			}
			if !IsProbe(tc.in) {
				t.Error("IsProbe = false for a probe UnmarshalBinary accepts")
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, errEmpty},
		{"empty", []byte{}, errEmpty},
		{"STAMP sender packet", stampSender(1, 0x8001, 0x1234), errTag},
		// A STAMP packet whose first octets happen to look like the start
		// of a probe: sequence number 0x0a0a...., error estimate 0x1201, SSID
		// 0 (TWAMP-Light). Signature and tos parse; the zero octet after
		// them is an invalid field number.
		{"STAMP packet with a probe-like prefix", stampSender(0x0a0a0000, 0x1201, 0), errTag},
		{"zero octet (field number 0)", []byte{0x00}, errTag},
		{"trailing zero after a probe", cat(dropboxProbe(0), []byte{0}), errTag},
		{"signature 9 octets", cat([]byte{0x0a, 0x09}, sig[:9], tosField(0)), errSignature},
		{"signature 11 octets", cat([]byte{0x0a, 0x0b}, sig, []byte{0}, tosField(0)), errSignature},
		{"signature empty", cat([]byte{0x0a, 0x00}, tosField(0)), errSignature},
		{"tos empty", cat(sigField(), []byte{0x12, 0x00}), errTOS},
		{"tos 2 octets", cat(sigField(), []byte{0x12, 0x02, 0, 0}), errTOS},
		{"no tos", cat(sigField(), sentField()), errNoTOS},
		{"no signature", cat(tosField(0), sentField()), errNoSig},
		{"padding only", []byte{0x3a, 0x01, 0}, errNoSig},
		{"unknown field 8", cat(sigField(), tosField(0), []byte{0x40, 0x01}), errField},
		{"unknown field 15 as bytes", cat(sigField(), tosField(0), []byte{0x7a, 0x00}), errField},
		{"largest field number", cat(sigField(), tosField(0), []byte{0xfa, 0xff, 0xff, 0xff, 0x0f, 0x00}), errField},
		{"field number beyond int32", cat(sigField(), tosField(0), []byte{0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00}), errTag},
		{"signature as varint", cat([]byte{0x08, 0x01}, tosField(0)), errWireType},
		{"tos as varint (tos uint32)", cat(sigField(), []byte{0x10, 0xb8, 0x01}), errWireType},
		{"sent as bytes", cat(sigField(), tosField(0), []byte{0x1a, 0x01, 0}), errWireType},
		{"sent as fixed64", cat(sigField(), tosField(0), []byte{0x19, 1, 2, 3, 4, 5, 6, 7, 8}), errWireType},
		{"sent as fixed32", cat(sigField(), tosField(0), []byte{0x1d, 1, 2, 3, 4}), errWireType},
		{"padding as start group", cat(sigField(), tosField(0), []byte{0x3b}), errWireType},
		{"padding as end group", cat(sigField(), tosField(0), []byte{0x3c}), errWireType},
		{"reserved wire type 6", cat(sigField(), tosField(0), []byte{0x3e}), errWireType},
		{"reserved wire type 7", cat(sigField(), tosField(0), []byte{0x3f}), errWireType},
		{"padding truncated", dropboxProbe(0)[:WireSize-1], errTruncated},
		{"signature truncated", []byte{0x0a, 0x0a, 1, 2, 3}, errTruncated},
		{"length varint truncated", []byte{0x0a, 0x8a}, errTruncated},
		{"sent varint truncated", cat(sigField(), tosField(0), []byte{0x18, 0x95, 0x9a}), errTruncated},
		{"tag varint truncated", cat(sigField(), tosField(0), []byte{0x80}), errTag},
		{"sent varint overflows", cat(sigField(), tosField(0), []byte{0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), errVarint},
		{"padding length overflows", cat(sigField(), tosField(0), []byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), errTruncated},
		{"signature repeated", cat(sigField(), sigField(), tosField(0)), errRepeated},
		{"tos repeated", cat(sigField(), tosField(0), tosField(1)), errRepeated},
		{"sent repeated", cat(sigField(), tosField(0), sentField(), sentField()), errRepeated},
		{"lost is 2", cat(sigField(), tosField(0), []byte{0x30, 0x02}), errLost},
		{"ascii text", []byte("GET / HTTP/1.1\r\n\r\n"), errField},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Probe{TOS: 0x55, Sent: 42}
			before := p
			err := p.UnmarshalBinary(tc.in)
			if err == nil {
				t.Fatalf("UnmarshalBinary accepted % x as %+v", tc.in, p)
			}
			if !errors.Is(err, ErrNotProbe) {
				t.Errorf("error %q does not match ErrNotProbe", err)
			}
			if err != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if p != before {
				t.Errorf("failed UnmarshalBinary changed the probe to %+v", p)
			}
			if IsProbe(tc.in) {
				t.Error("IsProbe = true for a datagram UnmarshalBinary refuses")
			}
		})
	}
}

func TestUnmarshalNilReceiver(t *testing.T) {
	var p *Probe
	if err := p.UnmarshalBinary(dropboxProbe(0)); err == nil {
		t.Fatal("UnmarshalBinary on a nil *Probe returned nil")
	}
}

// TestMarshalMatchesDropbox checks that the encoder produces, octet for
// octet, what Dropbox's collector sends.
func TestMarshalMatchesDropbox(t *testing.T) {
	p := Probe{Signature: wantSig(), TOS: 0xb8, Sent: sentNs}
	got, err := p.MarshalTo(nil, WireSize)
	if err != nil {
		t.Fatal(err)
	}
	if want := dropboxProbe(0xb8); !bytes.Equal(got, want) {
		t.Fatalf("MarshalTo(nil, 1028):\n got % x\nwant % x", got[:40], want[:40])
	}
	bin, err := p.MarshalBinary()
	if err != nil || !bytes.Equal(bin, got) {
		t.Fatalf("MarshalBinary differs from MarshalTo(nil, WireSize): %v", err)
	}
	if p.MinSize() != 25 {
		t.Errorf("MinSize = %d, want 25 (12 signature + 3 tos + 10 sent)", p.MinSize())
	}
}

func TestMarshalAppends(t *testing.T) {
	p := Probe{Signature: wantSig(), Sent: sentNs}
	prefix := []byte("prefix")
	out, err := p.MarshalTo(append([]byte(nil), prefix...), 100)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, prefix) || len(out) != len(prefix)+100 {
		t.Fatalf("MarshalTo did not append 100 octets to the prefix: len %d", len(out))
	}
	var q Probe
	if err := q.UnmarshalBinary(out[len(prefix):]); err != nil || q != p {
		t.Fatalf("decoding the appended probe: %v, %+v", err, q)
	}
}

// TestMarshalEverySize encodes probes of every size from their minimum up
// past the points where the padding's length varint grows, and checks the
// size and the round trip.
func TestMarshalEverySize(t *testing.T) {
	probes := []Probe{
		{Signature: wantSig(), Sent: sentNs},
		{Signature: wantSig(), TOS: 0xff},
		{Signature: wantSig(), TOS: 1, Sent: ^uint64(0), Rcvd: ^uint64(0), RTT: ^uint64(0), Lost: true},
	}
	sizes := func(min int) []int {
		var s []int
		for n := min; n < min+300; n++ {
			s = append(s, n)
		}
		for n := min + 16300; n < min+16500; n++ {
			s = append(s, n)
		}
		return append(s, WireSize, 1400, 9000, MaxSize-1, MaxSize)
	}
	for _, p := range probes {
		min := p.MinSize()
		for _, size := range sizes(min) {
			b, err := p.MarshalTo(nil, size)
			if size == min+1 {
				if err == nil {
					t.Errorf("%+v: MarshalTo(size %d = MinSize+1) succeeded", p, size)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%+v: MarshalTo(size %d): %v", p, size, err)
			}
			if len(b) != size {
				t.Fatalf("%+v: MarshalTo(size %d) gave %d octets", p, size, len(b))
			}
			var q Probe
			if err := q.UnmarshalBinary(b); err != nil {
				t.Fatalf("size %d: decoding our own probe: %v", size, err)
			}
			if q != p {
				t.Fatalf("size %d: round trip gave %+v, want %+v", size, q, p)
			}
		}
		for _, bad := range []int{-1, 0, min - 1, MaxSize + 1} {
			if _, err := p.MarshalTo(nil, bad); err == nil {
				t.Errorf("MarshalTo(size %d) succeeded", bad)
			}
		}
	}
}

func TestAllocations(t *testing.T) {
	probe := dropboxProbe(0)
	stamp := stampSender(7, 0x8001, 0x1234)
	var p Probe
	buf := make([]byte, 0, WireSize)
	cases := map[string]func(){
		"UnmarshalBinary probe":     func() { _ = p.UnmarshalBinary(probe) },
		"UnmarshalBinary not probe": func() { _ = p.UnmarshalBinary(stamp) },
		"IsProbe probe":             func() { _ = IsProbe(probe) },
		"IsProbe not probe":         func() { _ = IsProbe(stamp) },
		"MarshalTo with room":       func() { buf, _ = p.MarshalTo(buf[:0], WireSize) },
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

func FuzzProbe(f *testing.F) {
	f.Add(dropboxProbe(0))
	f.Add(dropboxProbe(0xb8))
	f.Add(stampSender(1, 0x8001, 0x1234))
	f.Add(stampSender(0x0a0a0000, 0x1201, 0))
	f.Add(cat(sigField(), tosField(0), sentField(), []byte{0x20, 0x05}))
	f.Add(cat(sigField(), tosField(0), []byte{0x28, 0x96, 0x01, 0x30, 0x01, 0x3a, 0x00, 0x3a, 0x01, 9}))
	f.Add([]byte{0x0a, 0x8a})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Probe
		err := p.UnmarshalBinary(b)
		if IsProbe(b) != (err == nil) {
			t.Fatalf("IsProbe = %v but UnmarshalBinary error = %v", IsProbe(b), err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotProbe) {
				t.Fatalf("error %v does not match ErrNotProbe", err)
			}
			if p != (Probe{}) {
				t.Fatalf("failed decode changed the probe: %+v", p)
			}
			return
		}
		// A probe we accept re-encodes to the same size (unless that size
		// is one octet over the fields, which no encoding reaches) and
		// decodes to the same values.
		size := len(b)
		if size > MaxSize {
			size = MaxSize
		}
		if size < p.MinSize() {
			size = p.MinSize()
		}
		out, err := p.MarshalTo(nil, size)
		if size == p.MinSize()+1 {
			if err == nil {
				t.Fatal("MarshalTo(MinSize+1) succeeded")
			}
			return
		}
		if err != nil {
			t.Fatalf("re-encoding %+v in %d octets: %v", p, size, err)
		}
		if len(out) != size {
			t.Fatalf("re-encoded in %d octets, want %d", len(out), size)
		}
		var q Probe
		if err := q.UnmarshalBinary(out); err != nil || q != p {
			t.Fatalf("round trip: %v, got %+v want %+v", err, q, p)
		}
	})
}

func BenchmarkUnmarshalBinary(b *testing.B) {
	probe := dropboxProbe(0)
	var p Probe
	b.ReportAllocs()
	for b.Loop() {
		if err := p.UnmarshalBinary(probe); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIsProbeSTAMP(b *testing.B) {
	stamp := stampSender(7, 0x8001, 0x1234)
	b.ReportAllocs()
	for b.Loop() {
		if IsProbe(stamp) {
			b.Fatal("STAMP packet taken for a probe")
		}
	}
}

func BenchmarkMarshalTo(b *testing.B) {
	p := Probe{Signature: wantSig(), Sent: sentNs}
	buf := make([]byte, 0, WireSize)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = p.MarshalTo(buf[:0], WireSize); err != nil {
			b.Fatal(err)
		}
	}
}
