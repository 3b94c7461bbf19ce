//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"golang.org/x/sys/unix"
)

// namePrefix starts the name of every namespace New creates.
const namePrefix = "llama-"

// Require skips the test with a message when the process is not root or
// the ip command is missing. When the environment variable CI is "true" it
// fails the test instead, so that CI cannot silently skip the tests.
func Require(t testing.TB) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "not running as root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "the ip command (iproute2) is not installed"
	}
	if why == "" {
		return
	}
	testlab.SkipOrFail(t, "network namespace tests need root and iproute2: %s", why)
}

// NS is a named network namespace, as listed by `ip netns list`.
type NS struct {
	// Name is the namespace's name; its handle is /run/netns/<Name>.
	Name string
}

// randomSuffix returns eight random hexadecimal digits.
func randomSuffix() string {
	return fmt.Sprintf("%08x", rand.Uint32())
}

// ip runs the ip command with args and returns its combined output.
func ip(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// mustIP runs the ip command with args and fails the test if it fails.
func mustIP(t testing.TB, args ...string) {
	t.Helper()
	if _, err := ip(args...); err != nil {
		t.Fatal(err)
	}
}

// New creates a network namespace with a unique name (namePrefix and a short
// random suffix), brings its loopback interface up and registers a cleanup
// that deletes it. It calls Require first.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	var (
		n   *NS
		err error
	)
	for range 5 { // a name collision is very unlikely; retry a few times
		n = &NS{Name: namePrefix + randomSuffix()}
		if _, err = ip("netns", "add", n.Name); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := ip("netns", "delete", n.Name); err != nil {
			t.Errorf("deleting network namespace: %v", err)
		}
	})
	mustIP(t, "-n", n.Name, "link", "set", "lo", "up")
	return n
}

// path returns the namespace's handle in the file system.
func (n *NS) path() string { return "/run/netns/" + n.Name }

// Run runs the command args in the namespace (`ip netns exec NAME args...`)
// and fails the test, showing the command's output, if it fails.
func (n *NS) Run(t testing.TB, args ...string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("netns: Run without a command")
	}
	cmd := n.Command(args[0], args[1:]...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in network namespace %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
}

// Command returns an exec.Cmd that runs the program name with args inside the
// namespace, through `ip netns exec`.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Link connects namespaces a and b with a veth pair, assigns aAddr to a's end
// and bAddr to b's end (CIDR strings like "198.18.0.1/30"; IPv6 addresses
// skip duplicate address detection), brings both ends up and returns the
// interface names. The names are unique, at most 15 characters long, and the
// link is deleted at cleanup (as it is with either namespace).
func Link(t testing.TB, a *NS, aAddr string, b *NS, bAddr string) (aIf, bIf string) {
	t.Helper()
	for _, s := range []string{aAddr, bAddr} {
		if _, err := netip.ParsePrefix(s); err != nil {
			t.Fatalf("netns: Link: %v", err)
		}
	}
	suffix := randomSuffix()
	aIf, bIf = "lv"+suffix+"a", "lv"+suffix+"b"
	mustIP(t, "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	t.Cleanup(func() {
		// Fails harmlessly when a namespace is already gone.
		_, _ = ip("-n", a.Name, "link", "delete", aIf)
	})
	for _, end := range []struct {
		ns        *NS
		ifc, addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		args := []string{"-n", end.ns.Name, "addr", "add", end.addr, "dev", end.ifc}
		if strings.Contains(end.addr, ":") {
			args = append(args, "nodad")
		}
		mustIP(t, args...)
		mustIP(t, "-n", end.ns.Name, "link", "set", end.ifc, "up")
	}
	return aIf, bIf
}

// Do runs f on the calling goroutine, locked to an OS thread that has joined
// the namespace, and then returns the thread to its original namespace.
// Sockets that f creates on this goroutine belong to the namespace and stay
// there after Do returns; goroutines that f starts do not run in it. If the
// thread cannot be returned to its original namespace, Do leaves it locked to
// the goroutine, so that the Go runtime discards the thread when the
// goroutine exits, and reports the error.
func (n *NS) Do(f func() error) (err error) {
	target, err := unix.Open(n.path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: opening %s: %w", n.path(), err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	orig, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: opening %s: %w", self, err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: joining %s: %w", n.Name, err)
	}
	defer func() {
		// Runs even if f panics.
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			err = errors.Join(err, fmt.Errorf("netns: returning from %s to the original network namespace: %w (the OS thread stays locked and is discarded)", n.Name, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return f()
}

// DialContext returns a dial function, usable as http.Transport.DialContext,
// whose sockets are created inside the namespace, so that a test in the root
// namespace can reach servers in this one. A host name in addr is resolved in
// the test process's namespace and its addresses are tried in turn.
func (n *NS) DialContext() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		// Dial literal addresses one at a time: net.Dialer creates the
		// socket on the calling goroutine only when it has no fallback
		// addresses to race in other goroutines.
		var ips []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{a}
		} else {
			ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
		}
		var d net.Dialer
		var errs []error
		for _, a := range ips {
			var c net.Conn
			err := n.Do(func() error {
				var err error
				c, err = d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
				return err
			})
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// ListenUDP creates a UDP socket bound to addr (like "198.18.0.2:0") inside
// the namespace; network is "udp", "udp4" or "udp6".
func (n *NS) ListenUDP(network, addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, err
	}
	var c *net.UDPConn
	err = n.Do(func() error {
		var err error
		c, err = net.ListenUDP(network, ua)
		return err
	})
	return c, err
}

// Listen creates a stream listener (network "tcp", "tcp4", "tcp6" or
// "unix") bound to addr inside the namespace, for example for an HTTP server
// that tests reach through DialContext.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
