package legacy_test

import (
	"fmt"

	"github.com/llama-exporter/llama_exporter/legacy"
)

// A prober builds a probe of the module's packet_size; a reflector that
// receives it recognises it and echoes it unchanged.
func Example() {
	p := legacy.Probe{TOS: 0xb8, Sent: 1700000000123456789}
	copy(p.Signature[:], "seq0000042")
	buf := make([]byte, 0, legacy.WireSize)
	buf, err := p.MarshalTo(buf, legacy.WireSize)
	if err != nil {
		panic(err)
	}

	// Reflector side: dispatch, then decode for the TOS to answer with.
	if legacy.IsProbe(buf) {
		var q legacy.Probe
		if err := q.UnmarshalBinary(buf); err != nil {
			panic(err)
		}
		fmt.Printf("LLAMA probe, %d octets, tos %#x, signature %q\n", len(buf), q.TOS, q.Signature[:])
	}
	// A STAMP test packet (sequence number 1, zeros) is not one.
	stamp := make([]byte, 44)
	stamp[3] = 1
	fmt.Println("STAMP packet is a LLAMA probe:", legacy.IsProbe(stamp))
	// Output:
	// LLAMA probe, 1028 octets, tos 0xb8, signature "seq0000042"
	// STAMP packet is a LLAMA probe: false
}
