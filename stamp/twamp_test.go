package stamp_test

import (
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/stamp"
)

// TestUnmarshalPartial decodes replies cut where real TWAMP-Light
// reflectors cut them.
func TestUnmarshalPartial(t *testing.T) {
	full := stamp.ReflectorPacket{Sequence: 9, SSID: 3, SenderSequence: 7, SenderTimestamp: 5, SenderErrorEstimate: 1, SenderTTL: 61}
	b, _ := full.MarshalBinary()
	for _, tc := range []struct {
		n       int
		wantErr bool
		ttl     uint8
	}{{44, false, 61}, {41, false, 61}, {40, false, 255}, {38, false, 255}, {36, false, 255}, {35, true, 0}} {
		var p stamp.ReflectorPacket
		err := p.UnmarshalPartial(b[:tc.n])
		if (err != nil) != tc.wantErr {
			t.Errorf("%d octets: err %v, want error %v", tc.n, err, tc.wantErr)
			continue
		}
		if err == nil && (p.SenderSequence != 7 || p.SenderTimestamp != 5 || p.SSID != 3 || p.SenderTTL != tc.ttl) {
			t.Errorf("%d octets: decoded %+v", tc.n, p)
		}
	}
}

// TestDwellPTP reads T3 - T2 in the format the Z bit names.
func TestDwellPTP(t *testing.T) {
	t2 := time.Date(2026, 11, 29, 23, 59, 59, 999_000_000, time.UTC)
	t3 := t2.Add(3 * time.Millisecond) // across a second boundary
	p := stamp.ReflectorPacket{ErrorEstimate: 1 << 14, ReceiveTimestamp: stamp.Timestamp(stamp.NewPTPTimestamp(t2)), Timestamp: stamp.Timestamp(stamp.NewPTPTimestamp(t3))}
	if got := p.Dwell(); got != 3*time.Millisecond {
		t.Errorf("PTP dwell %v, want 3ms", got)
	}
	if got := stamp.PTPSub(stamp.NewPTPTimestamp(t2), stamp.NewPTPTimestamp(t3)); got != -3*time.Millisecond {
		t.Errorf("stamp.PTPSub backwards %v, want -3ms", got)
	}
}

// FuzzReflectorPacketPartial: a partial reply decodes as the whole packet
// it starts, with the missing fields zero and the Sender TTL unknown.
func FuzzReflectorPacketPartial(f *testing.F) {
	full := stamp.ReflectorPacket{Sequence: 1, SenderSequence: 2, SenderTTL: 64}
	b, _ := full.MarshalBinary()
	f.Add(b)
	f.Add(b[:38])
	f.Fuzz(func(t *testing.T, b []byte) {
		var p, want stamp.ReflectorPacket
		err := p.UnmarshalPartial(b)
		if len(b) < stamp.MinReflectorReplyLen {
			if err == nil {
				t.Fatalf("%d octets accepted", len(b))
			}
			return
		}
		padded := make([]byte, max(len(b), stamp.ReflectorPacketLen))
		padded[stamp.OffsetSenderTTL] = 255
		copy(padded, b)
		if err != nil || want.UnmarshalBinary(padded) != nil || p != want {
			t.Fatalf("%d octets: %+v, %v; want %+v", len(b), p, err, want)
		}
	})
}
