package prober

import (
	"testing"

	"github.com/llama-exporter/llama_exporter/config"
	"github.com/llama-exporter/llama_exporter/stamp"
)

// benchReply returns the reply that the target of a module of prober name
// sends to probe req.
func benchReply(b *testing.B, name string, req []byte) []byte {
	switch name {
	case config.ProberSTAMP:
		var sp stamp.SenderPacket
		if err := sp.UnmarshalBinary(req); err != nil {
			b.Fatal(err)
		}
		rp := stamp.ReflectorPacket{Sequence: sp.Sequence, SSID: sp.SSID, SenderSequence: sp.Sequence,
			SenderTimestamp: sp.Timestamp, Timestamp: sp.Timestamp, ReceiveTimestamp: sp.Timestamp, SenderTTL: 64}
		out := make([]byte, len(req))
		if _, err := rp.MarshalTo(out); err != nil {
			b.Fatal(err)
		}
		return out
	case config.ProberICMP:
		return echoReply(req, 0x1234)
	}
	return req // a LLAMA reflector returns the probe
}

// BenchmarkProtocolCodec measures what one probe costs its protocol: the
// probe encoded, and its reply decoded, with each prober's default
// packet_size.
func BenchmarkProtocolCodec(b *testing.B) {
	for _, name := range []string{config.ProberSTAMP, config.ProberLLAMA, config.ProberICMP} {
		b.Run(name, func(b *testing.B) {
			m := decodeModule(b, name)
			p := Probers[name]
			enc, dec := p.New(m), p.New(m)
			buf := make([]byte, m.PacketSize+p.HeaderLen)
			probe := Probe{SSID: 7, Seq: 1, Flow: 1 % m.Flows}
			req, err := enc.Encode(buf, &probe)
			if err != nil {
				b.Fatal(err)
			}
			reply := benchReply(b, name, req)
			var r DecodedReply
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(buf, &probe); err != nil {
					b.Fatal(err)
				}
				if err := dec.Decode(reply, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
