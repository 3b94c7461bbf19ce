// Package impair is a UDP relay for tests that impairs the traffic between
// clients and one upstream address (loss, fixed delay, duplication,
// reordering and DSCP rewriting), independently in each direction. It stands
// in for the netem queueing discipline, which the test kernels lack.
//
// Every distinct client source address and port gets its own upstream-facing
// socket, connected to the upstream address, so the upstream sees one source
// port per client flow and its replies are relayed back to the right client
// from the relay's listening socket. Flows are never expired: their sockets
// live until Close.
//
// Delays are kept to a few microseconds where the machine allows: a delay
// line sleeps on a time.Timer until shortly before a datagram's release
// time, which Go timers alone would miss by a few hundred microseconds on
// some machines, and waits out the rest with nanosleep(2) and a brief
// yielding spin.
//
// The package is Linux-only (it sets IP_TOS / IPV6_TCLASS and sleeps with
// golang.org/x/sys/unix).
package impair

// This file, the package documentation, builds on every platform, so that
// go build ./... and go vet ./... pass where the rest of the package does
// not.
