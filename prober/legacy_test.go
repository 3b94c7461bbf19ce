package prober

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// TestLegacyProberAgainstLLAMAReflectors probes with Dropbox LLAMA probes
// two reflectors: ours, and a plain byte-for-byte UDP echo as Dropbox's
// reflector is. Both answer every probe.
func TestLegacyProberAgainstLLAMAReflectors(t *testing.T) {
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	ours := startReflector(t, "127.0.0.1:0")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	m := fastModule()
	m.Prober, m.PacketSize, m.Port = config.ProberLLAMA, 1028, 8100
	for _, target := range []string{echo.LocalAddr().String(), ours.String()} {
		s, _, err := mgr.Get(context.Background(), "llama_legacy", m, target)
		if err != nil {
			t.Fatal(err)
		}
		var sn Snapshot
		testlab.WaitFor(t, 20*time.Second, "200 decided legacy probes", func() bool {
			sn = s.Snapshot()
			return sn.WindowSent >= 200
		})
		if sn.Lost != 0 || !(sn.RTTMin > 0) || sn.Stateful {
			t.Errorf("%s: lost %d, RTT min %v, stateful %v", target, sn.Lost, sn.RTTMin, sn.Stateful)
		}
	}
}
