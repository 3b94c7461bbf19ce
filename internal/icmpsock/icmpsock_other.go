//go:build !linux || llama_portable

package icmpsock

import (
	"net/netip"
	"runtime"

	"github.com/llama-exporter/llama_exporter/internal/udpsock"
)

// Listen fails: echo sockets are implemented on Linux only.
func Listen(network string, laddr netip.AddrPort, o udpsock.Options) (Conn, error) {
	return nil, &NoSocketError{msg: "icmp prober: not implemented on " + runtime.GOOS + " (Linux ping or raw sockets only)"}
}
