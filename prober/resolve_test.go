package prober

import (
	"context"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"github.com/llama-exporter/llama_exporter/internal/udpsock"
	"github.com/llama-exporter/llama_exporter/reflector"
)

// TestHostnameAddressChangeIsFollowed resolves a hostname target to one
// loopback address, then another: the session follows it and goes on
// answered, without restarting. A new address outside allowed_targets is
// not followed.
func TestHostnameAddressChangeIsFollowed(t *testing.T) {
	if !udpsock.ControlMessages {
		t.Skip("the portable socket layer has no IP_PKTINFO: the wildcard reflector answers probes to 127.0.0.2 from 127.0.0.1, which match no session")
	}
	refl, err := reflector.New(reflector.Config{ListenAddresses: []string{"0.0.0.0:0"}}, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	refl.Serve()
	defer refl.Close()
	port := refl.Addrs()[0].Port()

	var current atomic.Pointer[netip.Addr]
	var lookups atomic.Int64
	set := func(s string) { a := netip.MustParseAddr(s); current.Store(&a) }
	set("127.0.0.2")
	mgr := NewManager(Options{}, nil, discard)
	defer mgr.Close()
	mgr.lookup = func(context.Context, string, string) ([]netip.Addr, error) {
		lookups.Add(1)
		return []netip.Addr{*current.Load()}, nil
	}
	mgr.resolveEvery = 100 * time.Millisecond
	m := fastModule()
	m.AllowedPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s, _, err := mgr.Get(context.Background(), "dns", m, "reflector.test:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 10*time.Second, "replies from 127.0.0.2", func() bool { return s.Snapshot().Received >= 20 })

	set("127.0.0.3")
	testlab.WaitFor(t, 10*time.Second, "the session to follow the new address", func() bool { return s.Dst().Addr() == netip.MustParseAddr("127.0.0.3") })
	before := s.Snapshot()
	testlab.WaitFor(t, 10*time.Second, "replies from 127.0.0.3", func() bool { return s.Snapshot().Received >= before.Received+20 })

	set("198.18.0.9") // outside allowed_targets: keep probing the old address
	seen := lookups.Load()
	testlab.WaitFor(t, 10*time.Second, "two more lookups", func() bool { return lookups.Load() >= seen+2 })
	if got := s.Dst().Addr(); got != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("followed an address outside allowed_targets: %v", got)
	}
	if sn := s.Snapshot(); sn.Lost > 1 {
		t.Errorf("lost %d probes across the address change", sn.Lost)
	}
	if ss := mgr.Sessions(); len(ss) != 1 || ss[0] != s {
		t.Fatal("the session was replaced")
	}
}
