//go:build linux

package wire

import (
	"bytes"
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/kvloom/kvloom/internal/testutil"
)

// TestCaptureLoopback sends a real hint over UDP on the loopback interface of
// a fresh namespace, captures it with Capture into a pcap, and reads it back.
func TestCaptureLoopback(t *testing.T) {
	ns := testutil.NewNetns(t)
	var (
		capt     *Capture
		srv, cli *net.UDPConn
	)
	err := ns.Do(func() error {
		var err error
		if capt, err = OpenCapture("lo"); err != nil {
			return err
		}
		if srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(DefaultPort)}); err != nil {
			return err
		}
		cli, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { capt.Close(); srv.Close(); cli.Close() })

	var pcap bytes.Buffer
	rec, err := NewRecorder(&pcap, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	parser := NewParser(DefaultPort)
	seen := make(chan struct{}, 1)
	go func() {
		n, err := capt.Run(ctx, rec, func(f []byte) bool {
			_, err := parser.Parse(f)
			if err == nil {
				select {
				case seen <- struct{}{}:
				default:
				}
			}
			return err == nil
		})
		done <- result{n, err}
	}()

	hint := sampleHint(9)
	payload, err := hint.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write(payload); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	if err := srv.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := srv.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], payload) {
		t.Fatal("server received other bytes than sent")
	}
	// The capture sees the datagram on lo's way out and in; wait until it
	// has kept one. Run writes a kept frame before it reads again, so
	// cancelling now loses nothing.
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("capture saw no KVLP frame within 5s")
	}
	cancel()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.n == 0 {
		t.Fatal("capture recorded nothing")
	}
	r, err := pcapgo.NewReader(bytes.NewReader(pcap.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := r.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if ci.Timestamp.IsZero() || ci.Length != len(data) {
		t.Fatalf("capture info %+v for %d bytes", ci, len(data))
	}
	pkt, err := NewParser(DefaultPort).Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if pkt.Message.RequestID != hint.RequestID || !slices.Equal(pkt.Message.Hints, hint.Hints) {
		t.Fatal("captured hint differs from the one sent")
	}
}

func TestOpenCaptureNoInterface(t *testing.T) {
	if _, err := OpenCapture("kvl-no-such-if"); err == nil {
		t.Fatal("capture opened on a missing interface")
	}
}
