//go:build linux

package hostdrops

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// kernel is the loaded program, attached to kfree_skb, and its maps.
type kernel struct {
	coll    *ebpf.Collection
	ports   *ebpf.Map
	counts  *ebpf.Map
	replies *ebpf.Map // drops of replies by flow port and remote address
	link    link.Link
	reasons map[uint32]string // enum skb_drop_reason, from the kernel's BTF

	latency, events *ebpf.Map   // receive latency; nil when latErr != nil
	latLinks        []link.Link // its programs' links
	latErr          error       // why receive latency is not measured
}

// latencyProgs are the receive latency programs, all tp_btf.
var latencyProgs = []string{"netif_rx_btf", "netif_receive_skb_btf", "sk_data_ready_btf", "sock_recv_length_btf"}

// New loads the program for the network namespace of the calling thread
// and attaches it, with tp_btf or else the classic tracepoint, and the
// receive latency programs (tp_btf only) when they load. It never fails:
// when the drop counter cannot run, the Collector's Err says what is
// missing, in one line, and it exports enabled 0; when only receive latency
// cannot, LatencyErr says why.
func New() *Collector {
	k, err := load()
	if err != nil {
		return &Collector{err: err}
	}
	return &Collector{k: k, watch: make(map[portKey]int)}
}

// load does New's work.
func load() (*kernel, error) {
	kspec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("host drops need the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	reasons, err := dropReasons(kspec)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("host drops: reading this network namespace: %w", err)
	}
	_ = rlimit.RemoveMemlock() // only kernels before 5.11 account BPF memory there
	tpBTF := func(p *ebpf.Program) (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
	}
	k := &kernel{reasons: reasons}
	btfErr := k.attach("kfree_skb_btf", uint32(st.Ino), tpBTF, true)
	if btfErr == nil {
		return k, nil
	}
	k.latErr = btfErr
	if btfErr = k.attach("kfree_skb_btf", uint32(st.Ino), tpBTF, false); btfErr == nil {
		return k, nil
	}
	tpErr := k.attach("kfree_skb_tp", uint32(st.Ino), func(p *ebpf.Program) (link.Link, error) {
		return link.Tracepoint("skb", "kfree_skb", p, nil)
	}, false)
	if tpErr == nil {
		return k, nil
	}
	// Without the capabilities the error depends on which map the loader
	// happened to create first (EPERM for most, "not supported" from the
	// feature probe of BPF_F_NO_PREALLOC), so the process's own
	// capabilities decide what to say.
	if missing := missingCaps(); missing != "" {
		return nil, fmt.Errorf("host drops need %s: the kernel refused to load the eBPF program", missing)
	}
	if errors.Is(btfErr, unix.EPERM) {
		return nil, fmt.Errorf("host drops: the kernel refused to load the eBPF program although the process has CAP_BPF and CAP_PERFMON (lockdown, seccomp?): %w", btfErr)
	}
	return nil, fmt.Errorf("host drops: attaching to kfree_skb: tp_btf: %v; tracepoint: %v", btfErr, tpErr)
}

// attach loads the program prog, with the receive latency programs when
// latency is set, and their maps, for the network namespace of inode
// netns, and attaches prog with attachFn. It fails when prog cannot run; a
// latency program that cannot be attached sets k.latErr.
func (k *kernel) attach(prog string, netns uint32, attachFn func(*ebpf.Program) (link.Link, error), latency bool) error {
	spec, err := loadHostdrops()
	if err != nil {
		return err
	}
	if err := spec.Variables["netns_ino"].Set(netns); err != nil {
		return err
	}
	for name := range spec.Programs {
		if name != prog && (!latency || !slices.Contains(latencyProgs, name)) {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return err
	}
	l, err := attachFn(coll.Programs[prog])
	if err != nil {
		coll.Close()
		return err
	}
	k.coll, k.link = coll, l
	k.ports, k.counts, k.replies = coll.Maps["ports"], coll.Maps["drops"], coll.Maps["reply_drops"]
	if !latency {
		return nil
	}
	for _, name := range latencyProgs {
		ll, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name], AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			k.latErr = fmt.Errorf("receive latency: attaching %s: %w", name, err)
			k.closeLatency()
			return nil
		}
		k.latLinks = append(k.latLinks, ll)
	}
	k.latency, k.events, k.latErr = coll.Maps["latency"], coll.Maps["lat_events"], nil
	return nil
}

// closeLatency detaches the receive latency programs.
func (k *kernel) closeLatency() error {
	var errs []error
	for _, l := range k.latLinks {
		errs = append(errs, l.Close())
	}
	k.latLinks, k.latency, k.events = nil, nil, nil
	return errors.Join(errs...)
}

// dropReasons reads the names of enum skb_drop_reason from the kernel's
// BTF.
func dropReasons(spec *btf.Spec) (map[uint32]string, error) {
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil, fmt.Errorf("host drops need a kernel with drop reasons (enum skb_drop_reason, Linux 5.17 or later): %w", err)
	}
	m := make(map[uint32]string, len(e.Values))
	for _, v := range e.Values {
		m[uint32(v.Value)] = reasonName(v.Name)
	}
	return m, nil
}

// missingCaps names the capabilities that the eBPF program needs and the
// process lacks in its effective set, from /proc/self/status; "" when it
// has both, or CAP_SYS_ADMIN.
func missingCaps() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "CAP_BPF and CAP_PERFMON"
	}
	var eff uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if eff&(1<<unix.CAP_SYS_ADMIN) != 0 {
		return "" // stands in for both
	}
	var missing []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_PERFMON, "CAP_PERFMON"}} {
		if eff&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	return strings.Join(missing, " and ")
}

func (k *kernel) setPort(p portKey, on bool) {
	key := hostdropsPortKey{Port: p.port, Role: p.role}
	if on {
		_ = k.ports.Put(key, uint8(1)) // full (4096 ports): that port is not counted
		return
	}
	_ = k.ports.Delete(key)
}

// drops sums the per-CPU counts.
func (k *kernel) drops() map[Drop]uint64 {
	out := make(map[Drop]uint64)
	var (
		key  hostdropsDropKey
		vals []uint64
	)
	it := k.counts.Iterate()
	for it.Next(&key, &vals) {
		if int(key.Kind) >= len(Kinds) {
			continue
		}
		reason, ok := k.reasons[key.Reason]
		if !ok {
			reason = unknownReason(key.Reason)
		}
		var n uint64
		for _, v := range vals {
			n += v
		}
		out[Drop{Reason: reason, Kind: Kinds[key.Kind]}] += n
	}
	return out
}

// replyDrops sums the per-CPU counts of one reply flow by reason; nil when
// it has none.
func (k *kernel) replyDrops(kind uint8, port uint16, from netip.Addr) map[string]uint64 {
	key := hostdropsReplyKey{Port: port, Kind: kind, Family: 6}
	if from.Is4() {
		key.Family = 4
		a := from.As4()
		copy(key.Addr[:], a[:])
	} else {
		key.Addr = from.As16()
	}
	var vals []hostdropsReplyVal
	if err := k.replies.Lookup(key, &vals); err != nil {
		return nil // ErrKeyNotExist: no drop yet
	}
	out := make(map[string]uint64)
	for _, v := range vals {
		for i, r := range v.Reason {
			if r == 0 {
				break
			}
			reason, ok := k.reasons[r]
			if !ok {
				reason = unknownReason(r)
			}
			out[reason] += v.N[i]
		}
	}
	return out
}

// latencyErr says why receive latency is not measured; nil when it is.
func (k *kernel) latencyErr() error { return k.latErr }

// receiveLatency sums the per-CPU histograms: [role][stage], role 0 the
// prober's and 1 the reflector's, stages in the order of Stages. ok is
// false when receive latency is not measured.
func (k *kernel) receiveLatency() (h [2][3]LatencyHistogram, overflows, resyncs uint64, ok bool) {
	if k.latency == nil {
		return h, 0, 0, false
	}
	for i := range uint32(6) {
		var vals []hostdropsLatHist
		if err := k.latency.Lookup(i, &vals); err != nil {
			return h, 0, 0, false
		}
		out := &h[i/3][i%3]
		for _, v := range vals {
			for b, n := range v.Bucket {
				out.Buckets[b] += n
			}
			out.SumNs += v.SumNs
		}
	}
	for i, dst := range []*uint64{&overflows, &resyncs} {
		var vals []uint64
		if err := k.events.Lookup(uint32(i), &vals); err == nil {
			for _, v := range vals {
				*dst += v
			}
		}
	}
	return h, overflows, resyncs, true
}

func (k *kernel) close() error {
	return errors.Join(k.closeLatency(), k.link.Close(), func() error { k.coll.Close(); return nil }())
}
