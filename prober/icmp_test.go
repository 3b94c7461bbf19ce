package prober

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/llama-exporter/llama_exporter/config"
)

// over a second: its reply is then late, not lost.
func icmpModule(t testing.TB) *config.Module {
	t.Helper()
	m := decodeModule(t, config.ProberICMP)
	m.Interval, m.Timeout, m.Window = 5*time.Millisecond, 3*time.Second, 10*time.Second
	return m
}

// port is a bad target.
func TestICMPTargetNamesNoPort(t *testing.T) {
	m := icmpModule(t)
	for _, tc := range []struct {
		target, host string
		ok           bool
	}{
		{"198.18.0.2", "198.18.0.2", true},
		{"2001:2::2", "2001:2::2", true},
		{"host.example", "host.example", true},
		{"198.18.0.2:862", "", false},
		{"[2001:2::2]:862", "", false},
		{"host.example:862", "", false},
		{"[2001:2::2]", "2001:2::2", true},
		{"", "", false},
	} {
		host, port, err := parseModuleTarget(tc.target, m)
		if (err == nil) != tc.ok || host != tc.host || port != 0 {
			t.Errorf("parseModuleTarget(%q) = %q, %d, %v; want %q, 0, ok %v", tc.target, host, port, err, tc.host, tc.ok)
		}
	}
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	_, _, err := mgr.Get(context.Background(), config.ProberICMP, m, "198.18.0.2:862")
	if bad := (*BadTargetError)(nil); !errors.As(err, &bad) {
		t.Errorf("Get with a port: %v, want a *BadTargetError", err)
	}
}

// socket of Identifier ident.
func echoReply(req []byte, ident uint16) []byte {
	b := slices.Clone(req)
	b[0] = byte(ipv4.ICMPTypeEchoReply)
	if req[0] == byte(ipv6.ICMPTypeEchoRequest) {
		b[0] = byte(ipv6.ICMPTypeEchoReply)
	}
	binary.BigEndian.PutUint16(b[4:6], ident)
	return b
}

// and malformed replies are bad data.
func TestICMPDecode(t *testing.T) {
	m := decodeModule(t, config.ProberICMP)
	p := Probers[config.ProberICMP]
	const ssid, ident = uint16(7), uint16(0x1234)
	seq := uint32(1<<20 + 3)
	flow := int(seq % uint32(m.Flows))
	var reqs [2][]byte
	for i, v6 := range []bool{false, true} {
		req, err := p.New(m).Encode(make([]byte, m.PacketSize+p.HeaderLen), &Probe{SSID: ssid, Seq: seq, Flow: flow, IPv6: v6})
		if err != nil {
			t.Fatal(err)
		}
		if len(req) != icmpHeaderLen+m.PacketSize || binary.BigEndian.Uint16(req[6:8]) != uint16(seq) {
			t.Fatalf("request %x: want %d octets, Sequence Number %d", req, icmpHeaderLen+m.PacketSize, uint16(seq))
		}
		reqs[i] = req
	}
	if reqs[0][0] != byte(ipv4.ICMPTypeEcho) || reqs[1][0] != byte(ipv6.ICMPTypeEchoRequest) {
		t.Fatalf("request types %d, %d; want 8 (ICMP), 128 (ICMPv6)", reqs[0][0], reqs[1][0])
	}
	decode := func(b []byte, flow int, ident uint16) (DecodedReply, error) {
		d := p.New(m)
		d.(flowBound).bindFlow(flow, ident)
		var r DecodedReply
		return r, d.Decode(b, &r)
	}
	want := DecodedReply{SSID: ssid, Seq: seq, ReflectorSeq: seq, SenderTTL: -1, DSCP2: -1}
	for _, req := range reqs {
		if r, err := decode(echoReply(req, ident), flow, ident); err != nil || r != want {
			t.Errorf("reply of type %d: %+v, %v; want %+v", echoReply(req, ident)[0], r, err, want)
		}
	}
	reply := echoReply(reqs[0], ident)
	modified := func(f func(b []byte) []byte) []byte { return f(slices.Clone(reply)) }
	for _, tc := range []struct {
		name      string
		b         []byte
		flow      int
		ident     uint16
		stray     bool
		wantError bool
	}{
		{"our request, seen on loopback", reqs[0], flow, ident, true, true},
		{"destination unreachable", modified(func(b []byte) []byte { b[0] = 3; return b }), flow, ident, true, true},
		{"another Identifier", reply, flow, ident + 1, true, true},
		{"another flow's socket", reply, (flow + 1) % m.Flows, ident, true, true},
		{"another ping's reply", modified(func(b []byte) []byte { b[8] = 'X'; return b }), flow, ident, true, true},
		{"data shorter than ours", reply[:icmpHeaderLen+icmpMinData-1], flow, ident, true, true},
		{"shorter than a header", reply[:icmpHeaderLen-1], flow, ident, false, true},
		{"empty", nil, flow, ident, false, true},
		{"code 1", modified(func(b []byte) []byte { b[1] = 1; return b }), flow, ident, false, true},
		{"Sequence Number not the data's", modified(func(b []byte) []byte { b[7]++; return b }), flow, ident, false, true},
		{"padding changed", modified(func(b []byte) []byte { b[len(b)-1] = 0xff; return b }), flow, ident, false, false},
	} {
		_, err := decode(tc.b, tc.flow, tc.ident)
		if (err != nil) != tc.wantError || errors.Is(err, ErrNotOurs) != tc.stray {
			t.Errorf("%s: %v; want error %v, stray %v", tc.name, err, tc.wantError, tc.stray)
		}
	}
}
