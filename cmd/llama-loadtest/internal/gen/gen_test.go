//go:build linux

package gen

import (
	"testing"

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
