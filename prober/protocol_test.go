package prober

import (
	"errors"
	"slices"
	"testing"

	"github.com/llama-exporter/llama_exporter/config"
)

// decodeModule returns a valid module of prober name, as configuration
// would give it.
func decodeModule(t testing.TB, name string) *config.Module {
	m := config.DefaultModule()
	spec := Probers[name].Spec
	m.Prober, m.Port, m.PacketSize = name, spec.DefaultPort, spec.DefaultPacketSize
	if err := m.Validate(); err != nil {
		t.Fatalf("module of prober %s: %v", name, err)
	}
	return &m
}

// TestRegistryFeedsConfig checks that every protocol of the registry is
// what configuration accepts, with its own limits.
func TestRegistryFeedsConfig(t *testing.T) {
	names := config.ProberNames()
	for name, p := range Probers {
		if !slices.Contains(names, name) {
			t.Errorf("prober %s is not registered with config", name)
		}
		if spec, _ := config.LookupProber(name); spec != p.Spec {
			t.Errorf("prober %s: config has %+v, registry %+v", name, spec, p.Spec)
		}
		decodeModule(t, name) // its defaults validate
	}
}

// TestEncodeDecodeLegacyRoundTrip: a legacy reflector echoes the probe, so
// the llama protocol decodes what it encoded into the probe's key and
// sequence number.
func TestEncodeDecodeLegacyRoundTrip(t *testing.T) {
	m := decodeModule(t, config.ProberLLAMA)
	proto := Probers[config.ProberLLAMA].New(m)
	buf := make([]byte, m.PacketSize)
	out, err := proto.Encode(buf, &Probe{SSID: 7, Seq: 1 << 30, DSCP: 46, T1: 1_700_000_000_123_456_789})
	if err != nil {
		t.Fatal(err)
	}
	var r DecodedReply
	if err := proto.Decode(out, &r); err != nil {
		t.Fatal(err)
	}
	want := DecodedReply{SSID: 7, Seq: 1 << 30, ReflectorSeq: 1 << 30, T1: 1_700_000_000_123_456_789, SenderTTL: -1, DSCP2: -1}
	if r != want {
		t.Errorf("decoded %+v, want %+v", r, want)
	}
	out[len(out)-1] ^= 0xff // padding is not the signature: still ours
	if err := proto.Decode(out, &r); err != nil {
		t.Errorf("padding changed: %v", err)
	}
}

// FuzzDecode feeds arbitrary datagrams to every protocol's decoder: none
// may panic, and what a decoder accepts has its fields in range.
func FuzzDecode(f *testing.F) {
	for name, p := range Probers {
		if p.Start != nil {
			continue // no datagrams to encode (tcp)
		}
		m := decodeModule(f, name)
		buf := make([]byte, m.PacketSize+p.HeaderLen)
		out, err := p.New(m).Encode(buf, &Probe{SSID: 1, Seq: 2, DSCP: 3})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
		f.Add(out[:len(out)/2])
	}
	f.Add(make([]byte, 36))
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, p := range Probers {
			var r DecodedReply
			err := p.New(decodeModule(t, name)).Decode(b, &r)
			if err != nil {
				if errors.Is(err, ErrNotOurs) && len(b) == 0 {
					t.Errorf("%s: an empty datagram is bad data, not a stray", name)
				}
				continue
			}
			if r.SenderTTL < -1 || r.SenderTTL > 254 || r.DSCP2 < -1 || r.DSCP2 > 63 || r.Dwell < 0 ||
				r.Stamps > StampsInvalid || r.Stamps != StampsUsable && r.Dwell != 0 {
				t.Errorf("%s: decoded out of range: %+v", name, r)
			}
			// What a protocol's spec says its replies cannot carry, they do not.
			if !p.ReflectorTimestamps && r.Stamps != StampsNone || !p.SenderTTL && r.SenderTTL != -1 ||
				!p.ClassOfService && r.DSCP2 != -1 {
				t.Errorf("%s: decoded what the protocol cannot carry: %+v", name, r)
			}
		}
	})
}
