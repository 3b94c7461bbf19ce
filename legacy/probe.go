// Package legacy encodes and decodes the UDP probes of Dropbox LLAMA, so that
// llama_exporter can probe LLAMA reflectors that are still deployed and its
// reflector can answer LLAMA collectors that are still deployed.
//
// # The wire format
//
// A LLAMA probe is the protobuf (proto3) message llama.Probe, sent as the
// whole UDP payload:
//
//	field 1  signature  bytes   10 octets identifying the probe
//	field 2  tos        bytes   1 octet: the IP TOS byte of the sending socket
//	field 3  sent       uint64  collector's wall clock at send, ns since 1970
//	field 4  rcvd       uint64  (not set by Dropbox; set by UDProbe reflectors)
//	field 5  rtt        uint64  (never set on the wire)
//	field 6  lost       bool    (never set on the wire)
//	field 7  padding    bytes   zeros that bring the probe to its size
//
// Dropbox's collector fills signature, tos, sent and 1000 octets of padding.
// The encoder emits fields in field-number order, as the gogo/protobuf
// generated code does, so a probe sent now (a nine-octet varint for sent)
// is
//
//	0a 0a <10 signature octets>        12 octets
//	12 01 <tos>                         3 octets
//	18 <9-octet varint of sent>        10 octets
//	3a e8 07 <1000 zero octets>      1003 octets
//	                                 ----
//	                                 1028 octets
//
// The signature is not a magic constant: Dropbox's collector uses the last
// ten octets of a random UUID (version 4) as a per-probe key and matches
// replies by it, and its reflector returns the datagram byte for byte without
// looking at the signature. A prober may therefore put any unique value in
// it, and a decoder must not expect a fixed one; what identifies a LLAMA
// probe is its structure.
//
// Sources matched (github.com/dropbox/llama, read for the format only):
// proto/llama.pb.go (the generated message: field numbers, wire types and
// marshal order), port.go (what the collector fills in, the 1000-octet
// padding), util.go (the signature: ten octets of a UUIDv4; sent:
// time.Now().UnixNano()), reflector.go and cmd/reflector/main.go (the reflector
// unmarshals, indexes tos[0], sets IP_TOS and echoes the datagram unchanged
// on UDP port 8100). The UDProbe fork (github.com/nsw3550/udprobe,
// proto/udprobe.proto and reflector.go) keeps the same message; its reflector
// re-marshals the probe with rcvd set, which this package decodes. One
// UDProbe revision of port.go encodes tos as a uint32 (a varint, not bytes);
// such probes are refused for their wire type.
//
// # Strictness
//
// UnmarshalBinary accepts exactly the messages above: every field number in
// 1..7 with its declared wire type, signature of 10 octets and tos of 1
// octet both present, fields 1 to 6 at most once, lost 0 or 1. Fields may come
// in any order and padding may repeat, as protobuf allows. Anything else, in
// particular a STAMP packet (whose zero MBZ octets are an invalid field
// number 0), is refused. Decoding never allocates and never panics.
package legacy

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	// SignatureLen is the length of the signature field in octets.
	SignatureLen = 10
	// WireSize is the size of the probes Dropbox's collector sends.
	WireSize = 1028
	// MaxSize is the largest probe MarshalTo produces: the largest UDP
	// payload of an IPv4 datagram.
	MaxSize = 65507
	// Port is the UDP port of Dropbox's reflector (its -port flag default).
	Port = 8100
)

// Field numbers of the llama.Probe message.
const (
	fieldSignature protowire.Number = 1
	fieldTOS       protowire.Number = 2
	fieldSent      protowire.Number = 3
	fieldRcvd      protowire.Number = 4
	fieldRTT       protowire.Number = 5
	fieldLost      protowire.Number = 6
	fieldPadding   protowire.Number = 7
)

// Probe is a decoded LLAMA probe. Padding is not kept: MarshalTo writes
// zeros, as Dropbox's collector does, and UnmarshalBinary skips it.
type Probe struct {
	// Signature identifies the probe; the collector matches replies by it.
	Signature [SignatureLen]byte
	// TOS is the IP TOS byte (DSCP << 2 | ECN) the collector sent with.
	TOS byte
	// Sent is the collector's send time in nanoseconds since the Unix
	// epoch (0 is not encoded, as in proto3).
	Sent uint64
	// Rcvd is a receive time in nanoseconds set by UDProbe reflectors; 0
	// when absent.
	Rcvd uint64
	// RTT and Lost exist in the message definition but Dropbox never puts
	// them on the wire; they are decoded and encoded for completeness.
	RTT  uint64
	Lost bool
}

// ErrNotProbe is matched, with errors.Is, by every error UnmarshalBinary
// returns.
var ErrNotProbe = errors.New("legacy: not a LLAMA probe")

// notProbe is the reason a datagram is not a probe. The values are created
// once, so returning one does not allocate.
type notProbe string

func (e notProbe) Error() string        { return ErrNotProbe.Error() + ": " + string(e) }
func (e notProbe) Is(target error) bool { return target == ErrNotProbe }

var (
	errEmpty      error = notProbe("empty datagram")
	errTag        error = notProbe("malformed field tag")
	errField      error = notProbe("field number not in the Probe message")
	errWireType   error = notProbe("wrong wire type for the field")
	errTruncated  error = notProbe("field runs past the end of the datagram")
	errVarint     error = notProbe("malformed varint")
	errRepeated   error = notProbe("field repeated")
	errSignature  error = notProbe("signature is not 10 octets")
	errTOS        error = notProbe("tos is not 1 octet")
	errLost       error = notProbe("lost is neither 0 nor 1")
	errNoSig      error = notProbe("no signature")
	errNoTOS      error = notProbe("no tos")
	errNilReceive error = errors.New("legacy: UnmarshalBinary on a nil *Probe")
)

// varintField is a uint64 field and its number.
type varintField struct {
	num protowire.Number
	v   uint64
}

// varints lists p's uint64 fields in field-number order.
func (p *Probe) varints() [3]varintField {
	return [3]varintField{{fieldSent, p.Sent}, {fieldRcvd, p.Rcvd}, {fieldRTT, p.RTT}}
}

// headerSize is the encoded size of every field but padding.
func (p *Probe) headerSize() int {
	n := protowire.SizeTag(fieldSignature) + protowire.SizeBytes(SignatureLen) +
		protowire.SizeTag(fieldTOS) + protowire.SizeBytes(1)
	for _, f := range p.varints() {
		if f.v != 0 {
			n += protowire.SizeTag(f.num) + protowire.SizeVarint(f.v)
		}
	}
	if p.Lost {
		n += protowire.SizeTag(fieldLost) + protowire.SizeVarint(protowire.EncodeBool(true))
	}
	return n
}

// MinSize is the smallest size MarshalTo accepts for p: its fields without
// padding (25 octets for a probe with only a current sent time).
func (p *Probe) MinSize() int { return p.headerSize() }

// paddingLen returns the length of a padding field's content such that the
// whole field (tag, length varint, content) is rem octets, or -1 if no
// length gives exactly rem octets (rem = 1, 130, 16387, ...).
func paddingLen(rem int) int {
	for v := 1; v <= protowire.SizeVarint(uint64(rem)); v++ {
		l := rem - protowire.SizeTag(fieldPadding) - v
		if l >= 0 && protowire.SizeVarint(uint64(l)) == v {
			return l
		}
	}
	return -1
}

// MarshalTo appends p, encoded as Dropbox's collector encodes it and padded
// with zeros to exactly size octets, to b and returns the extended slice. It
// does not allocate when b has room for size more octets.
//
// size must be in [p.MinSize(), MaxSize] and not p.MinSize()+1 (a padding
// field takes at least two octets). For the few sizes that one padding field
// cannot fill exactly (a field of 130 or 16387 octets: the length varint
// grows by one octet as the content passes 127 or 16383 octets), an empty
// padding field is written first and a second one fills the rest; protobuf
// decoders, Dropbox's included, keep the last one.
func (p *Probe) MarshalTo(b []byte, size int) ([]byte, error) {
	h := p.headerSize()
	if size < h || size > MaxSize {
		return b, fmt.Errorf("legacy: probe size %d out of range %d..%d", size, h, MaxSize)
	}
	rem := size - h
	if rem == 1 {
		return b, fmt.Errorf("legacy: probe size %d unreachable: one octet more than the fields, and a padding field takes at least two", size)
	}
	start := len(b)
	b = protowire.AppendTag(b, fieldSignature, protowire.BytesType)
	b = protowire.AppendBytes(b, p.Signature[:])
	b = protowire.AppendTag(b, fieldTOS, protowire.BytesType)
	b = protowire.AppendVarint(b, 1)
	b = append(b, p.TOS)
	for _, f := range p.varints() {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	if p.Lost {
		b = protowire.AppendTag(b, fieldLost, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(true))
	}
	if rem > 0 {
		l := paddingLen(rem)
		if l < 0 {
			b = protowire.AppendTag(b, fieldPadding, protowire.BytesType)
			b = protowire.AppendVarint(b, 0)
			l = paddingLen(rem - 2)
		}
		b = protowire.AppendTag(b, fieldPadding, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(l))
		n := len(b)
		b = slices.Grow(b, l)[:n+l] // no allocation when b has room, race detector or not
		clear(b[n:])
	}
	if len(b)-start != size {
		// Unreachable by construction; a guard against future edits.
		return b[:start], fmt.Errorf("legacy: encoded %d octets instead of %d", len(b)-start, size)
	}
	return b, nil
}

// MarshalBinary returns p encoded in WireSize octets, like the probes of
// Dropbox's collector.
func (p *Probe) MarshalBinary() ([]byte, error) {
	return p.MarshalTo(make([]byte, 0, WireSize), WireSize)
}

// UnmarshalBinary decodes a LLAMA probe. It returns an error matching
// ErrNotProbe for anything that is not exactly such a probe (see the package
// documentation) and then leaves p unchanged. It does not allocate.
func (p *Probe) UnmarshalBinary(b []byte) error {
	if p == nil {
		return errNilReceive
	}
	var q Probe
	if err := decode(b, &q); err != nil {
		return err
	}
	*p = q
	return nil
}

// IsProbe reports whether b is a LLAMA probe, with the same rules as
// UnmarshalBinary. It walks at most a handful of field headers, skipping the
// padding, so a reflector can call it on every datagram to choose between
// LLAMA and STAMP; a STAMP test packet is never a LLAMA probe.
func IsProbe(b []byte) bool {
	var q Probe
	return decode(b, &q) == nil
}

// decode parses b into q, which must be zero.
func decode(b []byte, q *Probe) error {
	if len(b) == 0 {
		return errEmpty
	}
	var seen uint8 // bit n set: field n seen
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTag
		}
		b = b[n:]
		if num > fieldPadding {
			return errField
		}
		if num != fieldPadding {
			if seen&(1<<num) != 0 {
				return errRepeated
			}
			seen |= 1 << num
		}
		switch num {
		case fieldSignature, fieldTOS, fieldPadding:
			if typ != protowire.BytesType {
				return errWireType
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return consumeErr(n)
			}
			b = b[n:]
			switch num {
			case fieldSignature:
				if len(v) != SignatureLen {
					return errSignature
				}
				copy(q.Signature[:], v)
			case fieldTOS:
				if len(v) != 1 {
					return errTOS
				}
				q.TOS = v[0]
			}
		default: // fields 3 to 6: varints
			if typ != protowire.VarintType {
				return errWireType
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return consumeErr(n)
			}
			b = b[n:]
			switch num {
			case fieldSent:
				q.Sent = v
			case fieldRcvd:
				q.Rcvd = v
			case fieldRTT:
				q.RTT = v
			case fieldLost:
				if v > 1 {
					return errLost
				}
				q.Lost = v == 1
			}
		}
	}
	if seen&(1<<fieldSignature) == 0 {
		return errNoSig
	}
	if seen&(1<<fieldTOS) == 0 {
		return errNoTOS
	}
	return nil
}

// consumeErr maps a protowire error code to this package's error.
func consumeErr(n int) error {
	if protowire.ParseError(n) == io.ErrUnexpectedEOF {
		return errTruncated
	}
	return errVarint
}
