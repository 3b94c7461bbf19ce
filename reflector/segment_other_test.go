//go:build !linux

package reflector

// hasSegmentSize reports whether oob carries UDP_SEGMENT: never outside
// Linux, which alone has UDP GSO.
func hasSegmentSize([]byte) bool { return false }
