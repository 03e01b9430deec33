package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/nic/wire"
)

func kvlpTestFrames(t *testing.T, port uint16) [][]byte {
	t.Helper()
	ep := wire.Endpoints{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: port,
	}
	msgs, err := wire.Hint{RequestID: 7, SaltID: 0xabc, Anchors: []wire.HintEntry{{Fingerprint: 1}, {Fingerprint: 2, TokenOffset: 9}}}.Packets(wire.MaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := wire.Answer(msgs[0], func(_, fp uint64) (wire.ReplyEntry, bool) { return wire.ReplyEntry{ChunkID: 5}, fp == 2 })
	if err != nil {
		t.Fatal(err)
	}
	bad := *msgs[0]
	bad.Version = 3
	var out [][]byte
	for _, f := range []func() ([]byte, error){
		func() ([]byte, error) { return ep.Frame(msgs[0]) },
		func() ([]byte, error) { return ep.Reverse().Frame(reply) },
		func() ([]byte, error) { return ep.RawFrame(&bad) },
		func() ([]byte, error) { e := ep; e.DstPort = 53; return e.PayloadFrame([]byte("dns")) },
	} {
		b, err := f()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestKVLPDecode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := wire.NewRecorder(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, fr := range kvlpTestFrames(t, wire.DefaultPort) {
		if err := rec.Write(time.Unix(1700000000, int64(i)*1000), fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "kvlp", "decode", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"10.0.0.1:40000 → 10.0.0.2:7470 HINT req=7 salt=0x0000000000000abc frag=0/1 entries=2",
		"10.0.0.2:7470 → 10.0.0.1:40000 HINT_REPLY req=7 salt=0x0000000000000abc frag=0/1 entries=2 hits=1",
		"malformed: parse frame: decode kvlp: field version at offset 2: value 3",
		"2 KVLP messages, 1 malformed, 1 other frames",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("decode output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "kvlp", "decode", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []kvlpFrame
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l kvlpFrame
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 3 || lines[1].Type != "HINT_REPLY" || lines[1].Hits != 1 || lines[2].Error == "" || lines[0].Frame != 1 {
		t.Fatalf("JSON lines %+v", lines)
	}
	if _, err := runCLI(t, "kvlp", "decode", "--port", "9", path); err != nil {
		t.Fatal(err)
	}
	notPcap := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(notPcap, []byte("not a pcap file at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "kvlp", "decode", notPcap); err == nil {
		t.Fatal("decoded a file that is not pcap")
	}
}

// TestKVLPCapture captures on the loopback interface while hints are sent
// to a port nobody else uses, then decodes the file.
func TestKVLPCapture(t *testing.T) {
	testutil.RequireRoot(t, "packet capture")
	const port = 47123
	path := filepath.Join(t.TempDir(), "cap.pcap")
	msgs, err := wire.Hint{RequestID: 99, Anchors: []wire.HintEntry{{Fingerprint: 1}}}.Packets(1)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := msgs[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				conn.Write(payload) // nobody listens: the send still crosses lo
			}
		}
	}()
	out, err := runCLI(t, "kvlp", "capture", "--iface", "lo", "--port", "47123", "--out", path, "--duration", "400ms")
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "captured") || strings.Contains(out, "captured 0 frames") {
		t.Fatalf("capture said %q", out)
	}
	var buf bytes.Buffer
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := decodeKVLP(&buf, f, port, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "HINT req=99") {
		t.Fatalf("captured file decodes to:\n%s", buf.String())
	}
	if _, err := runCLI(t, "kvlp", "capture", "--out", path); err == nil {
		t.Fatal("capture without --iface did not fail")
	}
}
