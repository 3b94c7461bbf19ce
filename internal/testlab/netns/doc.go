// Package netns has test helpers for multi-host tests in Linux network
// namespaces: it creates namespaces and veth links with iproute2's ip
// command and runs code, commands and sockets inside them.
//
// The tests that use it need root and the ip command; Require skips them
// otherwise, except under CI (CI=true), where it fails them. Only sockets and
// processes created through this package live in a namespace: everything
// else in the test, including goroutines that f in Do starts, stays in the
// namespace of the test process.
//
// The package is Linux-only (setns(2), iproute2).
package netns

// This file, the package documentation, builds on every platform, so that
// go build ./... and go vet ./... pass where the rest of the package does
// not.
