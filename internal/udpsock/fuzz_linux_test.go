//go:build linux && !llama_portable

package udpsock

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// appendRecvMeta builds the control messages the kernel would send with a
// datagram: IP_PKTINFO, IP_TTL, IP_TOS, SCM_TIMESTAMPING and UDP_GRO.
func appendRecvMeta(oob []byte, dst [4]byte, ifIndex, ttl int32, tos uint8, sec, nsec int64, gro int32) []byte {
	d := cmsg(&oob, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(d[0:4], uint32(ifIndex))
	copy(d[8:12], dst[:])
	binary.NativeEndian.PutUint32(cmsg(&oob, unix.IPPROTO_IP, unix.IP_TTL, 4), uint32(ttl))
	cmsg(&oob, unix.IPPROTO_IP, unix.IP_TOS, 1)[0] = tos
	ts := cmsg(&oob, unix.SOL_SOCKET, unix.SCM_TIMESTAMPING, 48)
	binary.NativeEndian.PutUint64(ts[0:8], uint64(sec))
	binary.NativeEndian.PutUint64(ts[8:16], uint64(nsec))
	binary.NativeEndian.PutUint32(cmsg(&oob, unix.IPPROTO_UDP, unix.UDP_GRO, 4), uint32(gro))
	return oob
}

// FuzzParseMeta: ParseMeta never panics on any control-message buffer,
// also after well-formed messages, and reads back what well-formed control
// messages carry.
func FuzzParseMeta(f *testing.F) {
	f.Add([]byte{}, int32(3), int32(64), uint8(0xb8), int64(1700000000), int64(5), int32(44))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}, int32(0), int32(255), uint8(0), int64(0), int64(1), int32(0))
	f.Fuzz(func(t *testing.T, raw []byte, ifIndex, ttl int32, tos uint8, sec, nsec int64, gro int32) {
		ParseMeta(raw) // must not panic
		dst := [4]byte{198, 18, 0, 1}
		oob := appendRecvMeta(nil, dst, ifIndex, ttl, tos, sec, nsec, gro)
		ParseMeta(append(oob[:len(oob):len(oob)], raw...)) // must not panic
		m := ParseMeta(oob)
		want := sec*1e9 + nsec
		if sec == 0 && nsec == 0 {
			want = 0
		}
		if m.Dst != netip.AddrFrom4(dst) || m.IfIndex != int(ifIndex) || m.TTL != int(ttl) || m.TOS != int(tos) ||
			m.KernelRX != want || m.GROSize != int(gro) {
			t.Fatalf("ParseMeta = %+v; want dst %v, ifindex %d, TTL %d, TOS %d, RX %d, GRO %d", m, netip.AddrFrom4(dst), ifIndex, ttl, tos, want, gro)
		}
	})
}
