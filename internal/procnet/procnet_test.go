package procnet

import "testing"

// TestParseProcNetUDP reads the port, inode and drops of each socket.
func TestParseProcNetUDP(t *testing.T) {
	b := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  112: 0100007F:A5A9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 17
 1234: 00000000:035E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 654321 2 0000000000000000 0
`
	socks, err := ParseUDP([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	want := []UDPSocket{{Port: 0xA5A9, Inode: 123456, Drops: 17}, {Port: 862, Inode: 654321}}
	if len(socks) != 2 || socks[0] != want[0] || socks[1] != want[1] {
		t.Errorf("got %+v, want %+v", socks, want)
	}
}
