package reflector

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// TestPortHeldElsewhereRefused: a reflector whose port another socket
// holds refuses to start, with an error that names the port and says
// another process holds it, whether that socket has SO_REUSEPORT (another
// llama_exporter, which the reflector's own SO_REUSEPORT sockets would
// otherwise join) or not, and with one socket or several. The reflector's
// own sockets still share their port.
func TestPortHeldElsewhereRefused(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		holder, err := udpsock.Listen("udp4", netip.MustParseAddrPort("127.0.0.1:0"), udpsock.Options{ReusePort: reuse})
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(int(holder.LocalAddr().(*net.UDPAddr).AddrPort().Port()))
		for _, addr := range []string{"127.0.0.1:" + port, ":" + port} {
			for _, sockets := range []int{1, 4} {
				r, err := New(Config{ListenAddresses: []string{addr}, Sockets: sockets}, nil, discard)
				if err == nil {
					r.Close()
					t.Errorf("holder with SO_REUSEPORT %v: reflector on %s with %d sockets started", reuse, addr, sockets)
					continue
				}
				want := fmt.Sprintf("UDP port %s is held by another process", port)
				if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
					t.Errorf("holder with SO_REUSEPORT %v, %s, %d sockets: %q, want one line containing %q", reuse, addr, sockets, err, want)
				}
			}
		}
		holder.Close()
	}
	r, _ := start(t, Config{ListenAddresses: []string{"127.0.0.1:0"}, Sockets: 4})
	if len(r.conns) != 4 || len(r.Addrs()) != 1 {
		t.Fatalf("%d sockets on %v, want 4 sharing one port", len(r.conns), r.Addrs())
	}
}
