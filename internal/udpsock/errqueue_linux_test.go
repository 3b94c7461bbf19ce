//go:build linux && !llama_portable

package udpsock

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A datagram to a closed port on loopback draws a port unreachable: the
// error queue hands it over with its offender, type, quote and timestamp,
// next to the transmit timestamps, and the next send may fail once with the
// error it reported.
func TestICMPErrorsOnLoopback(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			if network == "udp6" {
				lo = netip.IPv6Loopback()
			}
			c, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{RxTimestamps: true, TxTimestamps: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			closed := closedPort(t, network, lo)
			awaitRxTimestamps(t, network, lo)
			var got []ICMPError
			if err := c.EnableICMPErrors(func(e *ICMPError) {
				cp := *e
				cp.Quote = append([]byte(nil), e.Quote...)
				got = append(got, cp)
			}); err != nil {
				t.Fatal(err)
			}
			payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
			before := time.Now().UnixNano()
			if _, err := c.WriteToUDPAddrPort(payload, closed); err != nil {
				t.Fatal(err)
			}
			stamps := 0
			deadline := time.Now().Add(2 * time.Second)
			for len(got) == 0 && time.Now().Before(deadline) {
				c.DrainTxTimestamps(func(uint32, int64) { stamps++ }, 0)
			}
			if len(got) != 1 {
				t.Fatalf("ICMP errors read: %d, want 1", len(got))
			}
			e := got[0]
			if e.Offender != lo || !e.Unreachable() || e.TimeExceeded() || e.Code != map[bool]uint8{false: 3, true: 4}[e.V6] ||
				e.V6 != (network == "udp6") || string(e.Quote) != string(payload[:16]) || e.KernelRX < before {
				t.Errorf("ICMP error %+v (quote %q): want port unreachable from %v quoting %q, timestamped", e, e.Quote, lo, payload[:16])
			}
			if stamps != 1 {
				t.Errorf("transmit timestamps read: %d, want 1", stamps)
			}
			// The kernel also reported the error as the socket's pending
			// error: the next send fails once, sending nothing.
			_, err = c.WriteToUDPAddrPort(payload, closed)
			if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("send after the error: %v, want nil or ECONNREFUSED", err)
			}
		})
	}
}

// awaitRxTimestamps returns once the kernel timestamps the datagrams it
// receives on lo. The first socket that asks turns receive timestamps on
// from a work queue, so the first datagrams after it may still come
// without.
func awaitRxTimestamps(t *testing.T, network string, lo netip.Addr) {
	t.Helper()
	c, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{RxTimestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	buf, oob := make([]byte, 16), make([]byte, OOBSize)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := c.WriteToUDPAddrPort([]byte("ping"), self); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, m, err := c.ReadMeta(buf, oob); err == nil && m.KernelRX != 0 {
			return
		}
	}
	t.Fatal("the kernel did not timestamp received datagrams within 2s")
}

// closedPort returns an address on lo where no socket listens.
func closedPort(t *testing.T, network string, lo netip.Addr) netip.AddrPort {
	t.Helper()
	s, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.AddrPortFrom(lo, uint16(s.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()))
	s.Close()
	return a
}

// AppendHopLimit sets the TTL / Hop Limit of one datagram only.
func TestAppendHopLimit(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			if network == "udp6" {
				lo = netip.IPv6Loopback()
			}
			a, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := Listen(network, netip.AddrPortFrom(lo, 0), Options{RecvMeta: true})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			dst := b.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
			oob := a.AppendHopLimit(make([]byte, 0, SendOOBSize), 7)
			if _, _, err := a.WriteMsgUDPAddrPort([]byte("x"), oob, dst); err != nil {
				t.Fatal(err)
			}
			if _, err := a.WriteToUDPAddrPort([]byte("y"), dst); err != nil {
				t.Fatal(err)
			}
			b.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf, rb := make([]byte, 8), make([]byte, OOBSize)
			for i, want := range []int{7, a.InitialTTL()} {
				_, _, m, err := b.ReadMeta(buf, rb)
				if err != nil {
					t.Fatal(err)
				}
				if m.TTL != want {
					t.Errorf("datagram %d arrived with TTL %d, want %d", i, m.TTL, want)
				}
			}
		})
	}
}

// appendICMPError builds the control messages of an error-queue message:
// a receive timestamp and a sock_extended_err with its offender.
func appendICMPError(oob []byte, v6 bool, origin, typ, code uint8, offender netip.Addr, sec int64) []byte {
	ts := cmsg(&oob, unix.SOL_SOCKET, unix.SCM_TIMESTAMPING, 48)
	binary.NativeEndian.PutUint64(ts[0:8], uint64(sec))
	level, name, n := int32(unix.IPPROTO_IP), int32(unix.IP_RECVERR), eeLen+16
	if v6 {
		level, name, n = unix.IPPROTO_IPV6, unix.IPV6_RECVERR, eeLen+28
	}
	d := cmsg(&oob, level, name, n)
	d[eeOrigin], d[eeType], d[eeCode] = origin, typ, code
	if offender.Is4() {
		binary.NativeEndian.PutUint16(d[sockFamily:], unix.AF_INET)
		a := offender.As4()
		copy(d[sinAddr:], a[:])
	} else if offender.IsValid() {
		binary.NativeEndian.PutUint16(d[sockFamily:], unix.AF_INET6)
		a := offender.As16()
		copy(d[sin6Addr:], a[:])
	}
	return oob
}

// FuzzParseICMPError: parseICMPError never panics on any control-message
// buffer, also after a well-formed message, and reads back what a
// well-formed one carries; transmit timestamps and local errors are not
// ICMP errors.
func FuzzParseICMPError(f *testing.F) {
	f.Add([]byte{}, true, uint8(unix.SO_EE_ORIGIN_ICMP), uint8(11), uint8(0), []byte{198, 18, 0, 1}, int64(1700000000))
	f.Add([]byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0}, false, uint8(unix.SO_EE_ORIGIN_ICMP6), uint8(3), uint8(0),
		[]byte{0x20, 1, 0xd, 0xb8, 15: 1}, int64(1))
	f.Add([]byte{}, false, uint8(unix.SO_EE_ORIGIN_TIMESTAMPING), uint8(0), uint8(0), []byte{}, int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, v4 bool, origin, typ, code uint8, addr []byte, sec int64) {
		var e ICMPError
		parseICMPError(raw, &e) // must not panic
		offender, _ := netip.AddrFromSlice(addr)
		v6 := !v4
		if offender.Is4() != v4 || !offender.IsValid() {
			offender = netip.Addr{}
		}
		oob := appendICMPError(nil, v6, origin, typ, code, offender, sec)
		parseICMPError(append(oob[:len(oob):len(oob)], raw...), &e) // must not panic
		isICMP := parseICMPError(oob, &e)
		want := origin == unix.SO_EE_ORIGIN_ICMP || origin == unix.SO_EE_ORIGIN_ICMP6
		if isICMP != want {
			t.Fatalf("origin %d: ICMP error %v, want %v", origin, isICMP, want)
		}
		// An IPv4-mapped offender on an IPv6 socket reads as the IPv4
		// address it maps: the hop's own address.
		if want && (e.Offender != offender.Unmap() || e.Type != typ || e.Code != code || e.V6 != (origin == unix.SO_EE_ORIGIN_ICMP6) ||
			(sec != 0 && e.KernelRX != sec*1e9)) {
			t.Fatalf("parsed %+v; want offender %v type %d code %d timestamp %d s", e, offender.Unmap(), typ, code, sec)
		}
	})
}
