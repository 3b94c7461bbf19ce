// Package testlab is test support only: the rules and helpers that the
// tests of every package share. Its subpackages are the network
// namespaces of multi-host tests (netns) and a UDP impairment relay
// (impair). No binary imports it.
package testlab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// SkipOrFail skips t with the formatted reason, or fails it when the
// environment variable CI is "true", so that CI never silently skips a test
// because its machine lacks root, a tool or a kernel feature.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatal(msg + " (failing rather than skipping because CI=true)")
	}
	t.Skip(msg)
}

// CI reports whether the tests run under CI (the environment variable CI
// is "true"), where what a test needs must be there.
func CI() bool { return os.Getenv("CI") == "true" }

// RequireTool returns the path of the program name found on PATH, or skips
// or fails t (SkipOrFail) when there is none.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, "%s is not installed", name)
	}
	return p
}

// WaitFor polls cond every 20 ms until it holds, and fails t when it still
// does not after d; what names the condition in the failure.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitEvery(t, d, 20*time.Millisecond, what, cond)
}

// WaitEvery is WaitFor polling every poll, for conditions that hold for
// moments only.
func WaitEvery(t testing.TB, d, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(poll)
	}
}

// FreeTCP returns a loopback address, "127.0.0.1:PORT", whose TCP port was
// free a moment ago: for programs that cannot report the port they bound.
func FreeTCP(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeUDP returns a loopback address, "127.0.0.1:PORT", whose UDP port was
// free a moment ago.
func FreeUDP(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}
