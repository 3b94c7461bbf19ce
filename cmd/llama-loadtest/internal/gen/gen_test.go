//go:build linux

package gen

import (
	"net"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/stamp"
)

func TestSenderSequence(t *testing.T) {
	b := make([]byte, 44)
	p := stamp.SenderPacket{Sequence: 77, SSID: 3}
	p.MarshalTo(b)
	if seq, ok := SenderSequence(ReplyEcho, b); !ok || seq != 77 {
		t.Errorf("echo: %d %v", seq, ok)
	}
	r := stamp.ReflectorPacket{Sequence: 5, SenderSequence: 77}
	r.MarshalTo(b)
	if seq, ok := SenderSequence(ReplySTAMP, b); !ok || seq != 77 {
		t.Errorf("stamp: %d %v", seq, ok)
	}
	if _, ok := SenderSequence(ReplySTAMP, b[:43]); ok {
		t.Error("43 octets accepted")
	}
}

// TestGeneratorRate runs the generator with --rate against an echo loop:
// it never sends more than the token bucket allows (its burst, --sockets
// times --window, plus the rate times the time since it started), and the
// echoes come back.
func TestGeneratorRate(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { echo(conn); close(done) }()
	defer func() { conn.Close(); <-done }()
	const rate, sockets, window = 2000, 2, 8
	start := time.Now()
	g, err := New(Config{Target: conn.LocalAddr().(*net.UDPAddr).AddrPort(), Kind: ReplyEcho,
		Sockets: sockets, Window: window, PacketSize: 44, LossTimeout: time.Second, SampleEvery: 1, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	deadline := time.Now().Add(10 * time.Second)
	for g.Totals().Received < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sent := g.Totals().Sent
	limit := sockets*window + rate*time.Since(start).Seconds()
	if err := g.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	tot := g.Totals()
	t.Logf("sent %d (at most %.0f allowed), received %d", sent, limit, tot.Received)
	if float64(sent) > limit {
		t.Errorf("sent %d probes, more than the %.0f the rate allows", sent, limit)
	}
	if tot.Received < 200 {
		t.Errorf("received %d echoes, want at least 200", tot.Received)
	}
}

// echo answers every datagram on conn with itself until conn is closed.
func echo(conn *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		conn.WriteToUDPAddrPort(buf[:n], from)
	}
}
