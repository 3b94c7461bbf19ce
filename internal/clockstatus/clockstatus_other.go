//go:build !linux

package clockstatus

// readKernel says nothing off Linux: the clock is not known to be
// synchronised.
func readKernel() kernelStatus { return kernelStatus{} }
