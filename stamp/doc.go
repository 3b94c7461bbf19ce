// Package stamp encodes and decodes the wire format of the Simple Two-way
// Active Measurement Protocol (STAMP, RFC 8762) in unauthenticated mode,
// including the Session-Sender Identifier (SSID) defined by RFC 8972 §3.
//
// The package only deals with octets; it opens no sockets and keeps no
// session state. Two packet types are provided:
//
//   - [SenderPacket]: the Session-Sender test packet, RFC 8762 §4.2.1
//     (44 octets, [SenderPacketLen]).
//   - [ReflectorPacket]: the Session-Reflector test packet, RFC 8762 §4.3.1
//     (44 octets, [ReflectorPacketLen]).
//
// All multi-octet fields are big-endian (network order). Timestamps are the
// NTP 64-bit format of RFC 5905 §6 ([Timestamp]): 32 bits of seconds since
// 1900-01-01 00:00:00 UTC followed by 32 bits of fraction in units of
// 2^-32 seconds. The PTPv2 truncated format that RFC 8762 §4.2.1 also allows
// (signalled by the Z bit of an [ErrorEstimate]) is not converted by this
// package; callers that may receive it should check [ErrorEstimate.PTP].
//
// Error Estimate fields ([ErrorEstimate]) use the layout of RFC 4656 §4.1.2
// as referenced by RFC 8762 §4.2.1, with the Z bit of RFC 8762 §4.2.1.
//
// Decoders accept buffers longer than the fixed part (RFC 8762 §4.2.1 allows
// padding, and RFC 8972 appends TLVs); the extra octets are ignored and are
// not interpreted by this package. All decoders and MarshalTo methods return
// an error matching [ErrTooShort] (test with errors.Is) when the buffer is
// shorter than the fixed part. Must-Be-Zero (MBZ) fields are written as zero
// and ignored on receipt, as RFC 8762 §4.2.1 and §4.3.1 require.
//
// Encoding into a caller-supplied buffer (MarshalTo), decoding
// (UnmarshalBinary) and timestamp conversion ([NewTimestamp],
// [Timestamp.Time], [Timestamp.Sub]) do not allocate.
package stamp
