//go:build !linux || llama_portable

package udpsock

import "errors"

// errNoICMPErrors is returned where the error queue of UDP sockets does
// not exist.
var errNoICMPErrors = errors.New("reading ICMP errors on UDP sockets (IP_RECVERR) needs Linux")

// EnableICMPErrors needs Linux's IP_RECVERR; elsewhere it returns an
// error and the socket is unchanged.
func (c *Conn) EnableICMPErrors(func(*ICMPError)) error { return errNoICMPErrors }

// AppendHopLimit needs Linux's IP_TTL control message; elsewhere it
// returns oob unchanged and the datagram leaves with the socket's TTL.
func (c *Conn) AppendHopLimit(oob []byte, ttl int) []byte { return oob }
