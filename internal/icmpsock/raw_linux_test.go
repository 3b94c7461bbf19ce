//go:build linux && !llama_portable

package icmpsock

import (
	"bytes"
	"testing"
)

// TestChecksum checks the Internet checksum against RFC 1071 §3's example
// and its defining property: a message with its checksum sums to zero.
func TestChecksum(t *testing.T) {
	// RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2, so the
	// checksum is its complement.
	if got := checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("checksum %04x, want %04x", got, ^uint16(0xddf2))
	}
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'o', 'd', 'd'}
	c := checksum(msg)
	msg[2], msg[3] = byte(c>>8), byte(c)
	if got := checksum(msg); got != 0 {
		t.Errorf("a message with its checksum (%04x) sums to %04x, want 0", c, got)
	}
}

// TestStripIPv4 checks that an IPv4 raw read loses exactly its header,
// options included, and that what is not an IPv4 packet is left alone.
func TestStripIPv4(t *testing.T) {
	icmp := []byte{0, 0, 0xab, 0xcd, 0x12, 0x34, 0, 1}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want []byte
	}{
		{"20-octet header", append(append([]byte{0x45}, make([]byte, 19)...), icmp...), icmp},
		{"24-octet header (options)", append(append([]byte{0x46}, make([]byte, 23)...), icmp...), icmp},
		{"header longer than the packet", append([]byte{0x4f}, make([]byte, 30)...), nil},
		{"header length below 20", append([]byte{0x44}, make([]byte, 30)...), nil},
		{"not IPv4", append([]byte{0x60}, make([]byte, 30)...), nil},
		{"shorter than a header", []byte{0x45, 0, 0}, nil},
	} {
		p := bytes.Clone(tc.pkt)
		n := stripIPv4(p)
		want := tc.want
		if want == nil {
			want = tc.pkt // left as it is
		}
		if !bytes.Equal(p[:n], want) {
			t.Errorf("%s: %x, want %x", tc.name, p[:n], want)
		}
	}
}
