// Package stamp encodes and decodes the wire format of the Simple Two-way
// Active Measurement Protocol (STAMP, RFC 8762) in unauthenticated and
// authenticated mode, including the Session-Sender Identifier (SSID) defined
// by RFC 8972 §3 and the TLV extensions of RFC 8972 §4.
//
// The package only deals with octets; it opens no sockets and keeps no
// session state. Two packet types are provided:
//
//   - [SenderPacket]: the Session-Sender test packet, RFC 8762 §4.2.1
//     (44 octets, [SenderPacketLen]) or, authenticated, §4.2.2 (112 octets,
//     [AuthSenderPacketLen]).
//   - [ReflectorPacket]: the Session-Reflector test packet, RFC 8762 §4.3.1
//     (44 octets, [ReflectorPacketLen]) or, authenticated, §4.3.2 (112
//     octets, [AuthReflectorPacketLen]).
//
// Unauthenticated packets use MarshalTo and UnmarshalBinary. Authenticated
// packets use MarshalAuthTo and UnmarshalAuth with an HMAC key, or
// MarshalAuthWith and UnmarshalAuthWith with a reusable [Authenticator];
// the HMAC is HMAC-SHA-256 truncated to 16 octets over the first 96 octets
// (RFC 8762 §4.4), and a mismatch gives [ErrBadHMAC].
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
// Packet decoders accept buffers longer than the fixed part (RFC 8762
// §4.2.1 allows padding, and RFC 8972 appends TLVs); the extra octets are
// ignored by them. The TLVs that follow the base packet (at offset 44, or
// 112 in authenticated mode) are walked with [NextTLV] and [FindTLV] and
// written with [AppendTLV]; the Class of Service TLV value (RFC 8972 §4.4)
// is encoded by [ClassOfService]. All decoders and MarshalTo methods return
// an error matching [ErrTooShort] (test with errors.Is) when the buffer is
// shorter than the fixed part. Must-Be-Zero (MBZ) fields are written as zero
// and ignored on receipt, as RFC 8762 §4.2.1 and §4.3.1 require.
//
// Encoding into a caller-supplied buffer (MarshalTo, MarshalAuthWith),
// decoding (UnmarshalBinary, UnmarshalAuthWith), TLV parsing ([NextTLV],
// [FindTLV]), [Authenticator.Seal] and [Authenticator.Verify], and timestamp
// conversion ([NewTimestamp], [Timestamp.Time], [Timestamp.Sub]) do not
// allocate.
package stamp
