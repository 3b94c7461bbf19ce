//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"golang.org/x/sys/unix"
)

// inode returns the inode number of path (following symbolic links).
func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// startUDPEcho answers every datagram on c to its sender until c is closed.
func startUDPEcho(t testing.TB, c *net.UDPConn) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
}

// echoOnce sends msg on c and waits for the same bytes to come back.
func echoOnce(t testing.TB, c *net.UDPConn, msg string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("waiting for the echo: %v", err)
	}
	if got := string(buf[:n]); got != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestNewAndDo(t *testing.T) {
	n := New(t)
	if !strings.HasPrefix(n.Name, namePrefix) {
		t.Errorf("name %q lacks the prefix %q", n.Name, namePrefix)
	}
	nsIno := inode(t, n.path())
	rootIno := inode(t, "/proc/self/ns/net")
	if nsIno == rootIno {
		t.Fatal("the new namespace is the process's own")
	}

	var inside uint64
	var ifaces []net.Interface
	err := n.Do(func() error {
		inside = inode(t, fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		var err error
		ifaces, err = net.Interfaces()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != nsIno {
		t.Errorf("inside Do the thread's namespace is inode %d, want %d", inside, nsIno)
	}
	if len(ifaces) != 1 || ifaces[0].Flags&net.FlagLoopback == 0 || ifaces[0].Flags&net.FlagUp == 0 {
		t.Errorf("interfaces in a new namespace: %+v, want only lo, up", ifaces)
	}

	// Do returns f's error and leaves the thread where it was.
	sentinel := errors.New("sentinel")
	if err := n.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want the error of f", err)
	}
	// Every thread of the process is back in the root namespace (a thread
	// that could not be restored would still be in n).
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if ino := inode(t, "/proc/self/task/"+task.Name()+"/ns/net"); ino != rootIno {
			t.Errorf("thread %s is in namespace inode %d after Do", task.Name(), ino)
		}
	}

	// A panic in f still restores the thread.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic in f did not propagate")
			}
		}()
		_ = n.Do(func() error { panic("boom") })
	}()
	for _, task := range tasks {
		path := "/proc/self/task/" + task.Name() + "/ns/net"
		if _, err := os.Stat(path); err != nil {
			continue // thread gone
		}
		if ino := inode(t, path); ino != rootIno {
			t.Errorf("thread %s is in namespace inode %d after a panic in Do", task.Name(), ino)
		}
	}

	// Loopback in the namespace is its own: a UDP echo on its 127.0.0.1
	// answers a socket created in the same namespace.
	srv, err := n.ListenUDP("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startUDPEcho(t, srv)
	var c *net.UDPConn
	if err := n.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr().(*net.UDPAddr).AddrPort()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "hello loopback")
}

func TestCommand(t *testing.T) {
	n := New(t)
	out, err := n.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "lo:") {
		t.Errorf("links in a new namespace:\n%s", out)
	}
	n.Run(t, "true")
}

func TestLink(t *testing.T) {
	a, b := New(t), New(t)
	aIf, bIf := Link(t, a, "198.18.0.1/30", b, "198.18.0.2/30")
	for _, ifc := range []string{aIf, bIf} {
		if len(ifc) > 15 {
			t.Errorf("interface name %q is longer than 15 characters", ifc)
		}
	}
	if aIf == bIf {
		t.Errorf("both ends are named %q", aIf)
	}
	out, err := b.Command("ip", "-4", "-o", "addr", "show", "dev", bIf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "198.18.0.2/30") {
		t.Errorf("address of %s: %v\n%s", bIf, err, out)
	}

	// A second link between the same namespaces gets other names.
	aIf2, bIf2 := Link(t, a, "198.18.1.1/30", b, "198.18.1.2/30")
	if aIf2 == aIf || bIf2 == bIf {
		t.Errorf("second link reuses names %s/%s", aIf2, bIf2)
	}

	t.Run("udp", func(t *testing.T) {
		srv, err := b.ListenUDP("udp4", "198.18.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		startUDPEcho(t, srv)
		dst := srv.LocalAddr().(*net.UDPAddr).AddrPort()
		var c *net.UDPConn
		if err := a.Do(func() error {
			var err error
			c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if src := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); src != netip.MustParseAddr("198.18.0.1") {
			t.Errorf("source address %v, want 198.18.0.1", src)
		}
		for i := range 3 {
			echoOnce(t, c, fmt.Sprintf("probe %d", i))
		}
	})

	t.Run("ping", func(t *testing.T) {
		testlab.RequireTool(t, "ping") // .ci/run installs iputils-ping
		a.Run(t, "ping", "-c1", "-W1", "198.18.0.2")
		b.Run(t, "ping", "-c1", "-W1", "198.18.1.1")
	})
}

func TestHTTPThroughDialContext(t *testing.T) {
	a, b := New(t), New(t)
	Link(t, a, "198.18.0.1/30", b, "198.18.0.2/30")

	serve := func(n *NS, addr string) string {
		t.Helper()
		l, err := n.Listen("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s from %s", n.Name, r.RemoteAddr)
		})}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(l)
		}()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		return l.Addr().String()
	}
	get := func(via *NS, url string) string {
		t.Helper()
		tr := &http.Transport{DialContext: via.DialContext(), DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}

	// Across the link: a server in b reached from a.
	addr := serve(b, "198.18.0.2:0")
	if got := get(a, "http://"+addr+"/"); !strings.HasPrefix(got, b.Name+" from 198.18.0.1:") {
		t.Errorf("across the link got %q", got)
	}

	// On a namespace's own loopback.
	addr = serve(a, "127.0.0.1:0")
	if got := get(a, "http://"+addr+"/"); !strings.HasPrefix(got, a.Name+" from 127.0.0.1:") {
		t.Errorf("on loopback got %q", got)
	}
	// The same address from b, whose loopback has no such server, fails.
	tr := &http.Transport{DialContext: b.DialContext()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
		resp.Body.Close()
		t.Error("reached a's loopback server from b")
	}
}
