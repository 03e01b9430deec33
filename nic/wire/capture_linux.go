package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Capture reads every frame that crosses one network interface, in both
// directions, through an AF_PACKET socket. The socket belongs to the network
// namespace of the thread that opened it, so a capture opened inside a
// namespace keeps watching that namespace's interface.
//
// gopacket's pcapgo.EthernetHandle does the same but blocks in recvmsg with
// no way to interrupt it; this socket is non-blocking and served by Go's
// poller, so Run returns as soon as its context ends.
type Capture struct {
	f       *os.File
	ifname  string
	buf     []byte
	ifindex int
}

// OpenCapture opens a capture on the interface named ifname, in the calling
// thread's network namespace. It needs CAP_NET_RAW.
func OpenCapture(ifname string) (*Capture, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("open capture on %s: %w", ifname, err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("open capture on %s: AF_PACKET socket (needs CAP_NET_RAW): %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open capture on %s: bind: %w", ifname, err)
	}
	return &Capture{f: os.NewFile(uintptr(fd), "packet:"+ifname), ifname: ifname, ifindex: ifi.Index, buf: make([]byte, 65536)}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Run records frames for which keep returns true (every frame when keep is
// nil) until ctx ends, and returns how many it recorded. Cancellation is the
// normal way to stop it and is not an error.
func (c *Capture) Run(ctx context.Context, rec *Recorder, keep func(frame []byte) bool) (int, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	n := 0
	for {
		m, err := c.f.Read(c.buf)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				return n, nil
			}
			return n, fmt.Errorf("capture on %s: read: %w", c.ifname, err)
		}
		frame := c.buf[:m]
		if keep != nil && !keep(frame) {
			continue
		}
		if err := rec.Write(time.Now(), frame); err != nil {
			return n, fmt.Errorf("capture on %s: %w", c.ifname, err)
		}
		n++
	}
}

// Close releases the socket.
func (c *Capture) Close() error { return c.f.Close() }
