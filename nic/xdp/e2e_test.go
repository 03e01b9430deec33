//go:build linux

package xdp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/wire"
)

// prefetcher is the test's stand-in for the daemon's prefetcher: it takes
// ring-buffer events, resolves every chunk behind each, and starts one
// fetch per distinct chunk (here: records it), as kvloomd's store would.
type prefetcher struct {
	dev     *Device
	mu      sync.Mutex
	events  []PrefetchEvent
	started map[matcher.ChunkKey]uint64 // chunk → request that started it
	dones   []HintDone
	early   []HintDone // done records that came before their hint's events
	notify  chan struct{}
}

func newPrefetcher() *prefetcher {
	return &prefetcher{started: map[matcher.ChunkKey]uint64{}, notify: make(chan struct{}, 1)}
}

// onDone checks that a hint's events all came before its end.
func (p *prefetcher) onDone(d HintDone) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ev := range p.events {
		if ev.RequestID == d.RequestID && ev.SaltID == d.SaltID && ev.FragIndex == d.FragIndex {
			n++
		}
	}
	p.dones = append(p.dones, d)
	if n < d.Events {
		p.early = append(p.early, d)
	}
}

func (p *prefetcher) onEvent(ev PrefetchEvent) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	for _, k := range p.dev.Chunks(ev.SaltID, ev.Fingerprint) {
		if _, ok := p.started[k]; !ok {
			p.started[k] = ev.RequestID
		}
	}
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// waitEvents waits until n events arrived.
func (p *prefetcher) waitEvents(t *testing.T, n int) []PrefetchEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		if len(p.events) >= n {
			out := slices.Clone(p.events)
			p.mu.Unlock()
			return out
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-deadline:
			t.Fatalf("%d ring-buffer events after 10s, want %d", len(p.events), n)
		}
	}
}

// router is the sending side: a UDP socket in the router namespace.
type router struct {
	conn *net.UDPConn
	host netip.AddrPort
}

func newRouter(t *testing.T, pair *testutil.VethPair, v6 bool, port uint16) *router {
	t.Helper()
	local, host := pair.RouterIP4, pair.HostIP4
	network := "udp4"
	if v6 {
		local, host, network = pair.RouterIP6, pair.HostIP6, "udp6"
	}
	var conn *net.UDPConn
	err := pair.Router.Do(func() error {
		var err error
		conn, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
		return err
	})
	if err != nil {
		t.Fatalf("router socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &router{conn: conn, host: netip.AddrPortFrom(host, port)}
}

// exchange sends a request's hints as real UDP datagrams and returns the
// replies, paired with their hints.
func (r *router) exchange(t *testing.T, h wire.Hint, mtu int, v6 bool) ([]*wire.KVLP, []*wire.KVLP) {
	t.Helper()
	per, err := wire.EntriesPerPacket(mtu, v6)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := h.Packets(per)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.conn.WriteToUDPAddrPort(b, r.host); err != nil {
			t.Fatalf("send hint: %v", err)
		}
	}
	replies := make([]*wire.KVLP, len(msgs))
	buf := make([]byte, 2048)
	for range msgs {
		if err := r.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for a HINT_REPLY: %v", err)
		}
		if from != r.host {
			t.Fatalf("reply from %v, want %v", from, r.host)
		}
		m, err := wire.Decode(buf[:n])
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		if m.Type != wire.TypeHintReply || int(m.FragIndex) >= len(msgs) || replies[m.FragIndex] != nil {
			t.Fatalf("unexpected reply %v %d/%d", m.Type, m.FragIndex, m.FragCount)
		}
		replies[m.FragIndex] = m
	}
	return msgs, replies
}

// TestEndToEnd attaches the program to the host end of a veth pair and has
// a router in another namespace send real HINT datagrams over IPv4 and
// IPv6: the program answers them from the kernel, the router's stack
// accepts the replies (so addresses and checksums are right), the
// prefetcher gets one ring-buffer event per hit and starts the fetches,
// ordinary UDP still reaches a user-space server behind the program, and
// the router-side capture reads back in tshark with docs/kvlp.lua.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []AttachMode{AttachGeneric, AttachNative} {
		t.Run(mode.String(), func(t *testing.T) { testEndToEnd(t, mode) })
	}
}

func testEndToEnd(t *testing.T, mode AttachMode) {
	requireBPF(t)
	pair := testutil.NewVethPair(t)
	if mode == AttachNative {
		// Native XDP_TX on veth hands the frame to the peer's NAPI
		// instance, which exists when the peer runs an XDP program of its
		// own (or has GRO on): give the router's end a pass-through one.
		attachPass(t, pair.Router, pair.RouterIf)
	}
	pf := newPrefetcher()
	d := openDevice(t, Options{
		Interface: pair.HostIf, Netns: "/var/run/netns/" + pair.Host.Name, Mode: mode,
		OnPrefetch: pf.onEvent, OnHintDone: pf.onDone,
	})
	pf.mu.Lock()
	pf.dev = d // the reader goroutine reads it under mu
	pf.mu.Unlock()
	if link := ipLink(t, pair.Host, pair.HostIf); !strings.Contains(link, xdpMark(mode)) {
		t.Fatalf("after attach in %v mode the link shows no %q: %s", mode, xdpMark(mode), link)
	}

	info := d.Info()
	w := newTestWorld(t, 6, info.Matcher)
	var entries []nic.Entry
	for i := range 8 {
		entries = append(entries, w.entry(w.tokens(160+8*i), false, 1))
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		t.Fatal(err)
	}
	// A prompt with three indexed chunks in it, long enough for several packets.
	prompt := slices.Concat(w.tokens(2000), entries[1].Tokens, w.tokens(900), entries[5].Tokens, w.tokens(1500), entries[6].Tokens, w.tokens(1800))
	params := d.cfg.params
	anchors := params.Anchors(prompt, nil)
	h := wire.Hint{RequestID: 4242, SaltID: w.salt.ID()}
	for _, a := range anchors {
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: a.FP, TokenOffset: uint32(a.Off)})
	}
	// Which anchors the index holds, from the host table.
	indexed := map[uint64]bool{}
	for _, a := range anchors {
		if len(d.Chunks(w.salt.ID(), a.FP)) > 0 {
			indexed[a.FP] = true
		}
	}
	if len(indexed) == 0 {
		t.Fatal("the prompt hits no anchor: the test is broken")
	}

	capt, pcap := startCapture(t, pair)
	totalHits := 0
	for _, v6 := range []bool{false, true} {
		before, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		r := newRouter(t, pair, v6, wire.DefaultPort)
		hints, replies := r.exchange(t, h, 1500, v6)
		if len(hints) < 2 {
			t.Fatalf("%d anchors fit one packet: make the prompt longer", len(h.Anchors))
		}
		hits := 0
		for i := range hints {
			found, err := wire.HitsOf(hints[i], replies[i])
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range found {
				if !indexed[f.Hint.Fingerprint] {
					t.Fatalf("reply says anchor %#x hit, the index does not hold it", f.Hint.Fingerprint)
				}
				if !slices.ContainsFunc(d.Chunks(w.salt.ID(), f.Hint.Fingerprint), func(k matcher.ChunkKey) bool { return wire.ChunkID(k) == f.Reply.ChunkID }) {
					t.Fatalf("reply names chunk %#x for anchor %#x", f.Reply.ChunkID, f.Hint.Fingerprint)
				}
			}
			hits += len(found)
		}
		want := 0
		for _, a := range h.Anchors {
			if indexed[a.Fingerprint] {
				want++
			}
		}
		if hits != want {
			t.Fatalf("v6=%v: replies report %d hits, the index holds %d of the prompt's anchors", v6, hits, want)
		}
		after, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if got := after[HintReplied] - before[HintReplied]; got != uint64(len(hints)) {
			t.Fatalf("v6=%v: hint_replied grew by %d for %d hints", v6, got, len(hints))
		}
		if got := after[Hits] - before[Hits]; got != uint64(hits) {
			t.Fatalf("v6=%v: hits counter grew by %d, replies carried %d", v6, got, hits)
		}
		totalHits += hits
	}

	// The prefetcher saw every hit and started exactly the three chunks.
	evs := pf.waitEvents(t, totalHits)
	for _, ev := range evs {
		if ev.RequestID != 4242 || ev.Ifindex != uint32(pair.HostIndex) {
			t.Fatalf("event %+v: want request 4242 on ifindex %d", ev, pair.HostIndex)
		}
	}
	pf.mu.Lock()
	if len(pf.early) > 0 || len(pf.dones) == 0 {
		t.Fatalf("done records %+v; %d came before their events", pf.dones, len(pf.early))
	}
	var started []matcher.ChunkKey
	for k := range pf.started {
		started = append(started, k)
	}
	pf.mu.Unlock()
	wantStarted := []matcher.ChunkKey{entries[1].Key, entries[5].Key, entries[6].Key}
	slices.SortFunc(started, func(a, b matcher.ChunkKey) int { return bytes.Compare(a[:], b[:]) })
	slices.SortFunc(wantStarted, func(a, b matcher.ChunkKey) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(started, wantStarted) {
		t.Fatalf("prefetches started for %v, want %v", started, wantStarted)
	}

	// Plain UDP to another port passes through to user space.
	echoAcrossProgram(t, pair, d)

	frames := capt.stop(t)
	checkCaptureWithTshark(t, pcap, frames)

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if link := ipLink(t, pair.Host, pair.HostIf); strings.Contains(link, "xdp") {
		t.Fatalf("after Close the link still shows an XDP program: %s", link)
	}
}

// attachPass attaches an XDP program that passes everything to ifname in ns.
func attachPass(t testing.TB, ns *testutil.Netns, ifname string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	err = ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach a pass program to %s: %v", ifname, err)
	}
}

func xdpMark(m AttachMode) string {
	if m == AttachGeneric {
		return "xdpgeneric"
	}
	return "xdp"
}

func ipLink(t *testing.T, ns *testutil.Netns, ifname string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "link", "show", "dev", ifname).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v: %s", err, out)
	}
	return string(out)
}

// echoAcrossProgram runs a user-space UDP echo server in the host namespace
// and checks that the router reaches it through the attached program.
func echoAcrossProgram(t *testing.T, pair *testutil.VethPair, d *Device) {
	t.Helper()
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	srv := startEcho(t, pair, false)
	r := newRouter(t, pair, false, srv.port)
	msg := []byte("not a hint")
	if _, err := r.conn.WriteToUDPAddrPort(msg, r.host); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if err := r.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := r.conn.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("echo through the program: %q, %v", buf[:n], err)
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after[PassOtherPort] <= before[PassOtherPort] {
		t.Fatal("the echo datagram did not go through the program's pass_other_port path")
	}
}

// echoServer answers every datagram with itself, from user space.
type echoServer struct {
	conn *net.UDPConn
	port uint16
	done chan struct{}
}

func startEcho(t testing.TB, pair *testutil.VethPair, v6 bool) *echoServer {
	t.Helper()
	ip, network := pair.HostIP4, "udp4"
	if v6 {
		ip, network = pair.HostIP6, "udp6"
	}
	var conn *net.UDPConn
	err := pair.Host.Do(func() error {
		var err error
		conn, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		return err
	})
	if err != nil {
		t.Fatalf("echo server: %v", err)
	}
	s := &echoServer{conn: conn, port: uint16(conn.LocalAddr().(*net.UDPAddr).Port), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := conn.WriteToUDPAddrPort(buf[:n], from); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

// routerCapture records the router's side of the veth into a pcap file.
type routerCapture struct {
	cancel context.CancelFunc
	done   chan error
	rec    *wire.Recorder
	file   *os.File
}

func startCapture(t *testing.T, pair *testutil.VethPair) (*routerCapture, string) {
	t.Helper()
	var c *wire.Capture
	if err := pair.Router.Do(func() error {
		var err error
		c, err = wire.OpenCapture(pair.RouterIf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	path := filepath.Join(t.TempDir(), "router.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rec, err := wire.NewRecorder(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	rc := &routerCapture{cancel: cancel, done: make(chan error, 1), rec: rec, file: f}
	parser := wire.NewParser(wire.DefaultPort)
	go func() {
		_, err := c.Run(ctx, rec, func(frame []byte) bool { _, err := parser.Parse(frame); return err == nil })
		rc.done <- err
	}()
	t.Cleanup(func() { cancel() })
	return rc, path
}

// stop ends the capture after the last frames had time to arrive and
// returns how many were recorded.
func (c *routerCapture) stop(t *testing.T) int {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	c.cancel()
	if err := <-c.done; err != nil {
		t.Fatal(err)
	}
	if err := c.file.Sync(); err != nil {
		t.Fatal(err)
	}
	return c.rec.Frames()
}

// checkCaptureWithTshark decodes the router's capture with tshark and the
// project's dissector: every frame is KVLP, hints and replies pair up, and
// nothing is flagged malformed.
func checkCaptureWithTshark(t *testing.T, pcap string, frames int) {
	t.Helper()
	tshark := testutil.RequireTool(t, "tshark", "tshark")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), tshark, "-n", "-r", pcap, "-X", "lua_script:"+filepath.Join(root, "docs/kvlp.lua"),
		"-T", "fields", "-e", "kvlp.type", "-e", "kvlp.request_id", "-e", "_ws.expert.message")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != frames || frames == 0 {
		t.Fatalf("tshark read %d frames, the capture recorded %d", len(lines), frames)
	}
	count := map[string]int{}
	for _, l := range lines {
		f := append(strings.Split(l, "\t"), "", "")
		if f[1] != "4242" || f[2] != "" {
			t.Fatalf("tshark line %q: want a KVLP message of request 4242 without errors", l)
		}
		count[f[0]]++
	}
	if count["1"] == 0 || count["1"] != count["2"] {
		t.Fatalf("capture holds %d hints and %d replies (%s)", count["1"], count["2"], fmt.Sprint(count))
	}
}

// TestAttachModes: auto picks native XDP on a veth, offload is refused
// with the reason, and loading a signed image while attached moves the
// live link onto the new program without a gap in answers.
func TestAttachModes(t *testing.T) {
	requireBPF(t)
	pair := testutil.NewVethPair(t)
	netns := "/var/run/netns/" + pair.Host.Name
	if _, err := Open(t.Context(), Options{Interface: pair.HostIf, Netns: netns, Mode: AttachOffload}); err == nil || !strings.Contains(err.Error(), "offload") {
		t.Fatalf("offload on a veth: err %v, want a refusal naming offload", err)
	}
	if link := ipLink(t, pair.Host, pair.HostIf); strings.Contains(link, "xdp") {
		t.Fatalf("a failed offload attach left a program: %s", link)
	}

	pub, priv, err := bitstream.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attachPass(t, pair.Router, pair.RouterIf) // native XDP_TX on veth needs the peer's NAPI
	d := openDevice(t, Options{Interface: pair.HostIf, Netns: netns, Trust: bitstream.NewKeyRing(pub)})
	if d.Mode() != AttachNative {
		t.Fatalf("auto mode on a veth attached %v, want native", d.Mode())
	}
	w := newTestWorld(t, 8, d.Info().Matcher)
	e := w.entry(w.tokens(200), false, 1)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	hintOf := func() wire.Hint {
		h := wire.Hint{RequestID: 9, SaltID: w.salt.ID()}
		for _, a := range d.cfg.params.Anchors(e.Tokens, nil) {
			h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: a.FP, TokenOffset: uint32(a.Off)})
		}
		return h
	}
	r := newRouter(t, pair, false, wire.DefaultPort)
	hitsOf := func(h wire.Hint) int {
		hints, replies := r.exchange(t, h, 1500, false)
		n := 0
		for i := range hints {
			f, err := wire.HitsOf(hints[i], replies[i])
			if err != nil {
				t.Fatal(err)
			}
			n += len(f)
		}
		return n
	}
	h := hintOf()
	if got := hitsOf(h); got != len(h.Anchors) {
		t.Fatalf("built-in program: %d of %d anchors hit", got, len(h.Anchors))
	}
	img, err := bitstream.Build(bitstream.Manifest{
		Name: "kvlp-xdp", Version: "2.0.0", Kind: bitstream.KindXDP,
		Matcher: bitstream.MatcherParams{AnchorWindow: 32, MinMatch: 32, KGram: 8, BlockTokens: 128, TableCapacity: 64, ChunkTokens: 1024},
		Build:   bitstream.BuildInfo{Time: "2026-01-02T03:04:05Z"},
	}, []bitstream.Payload{{Name: "kvlp.o", Type: bitstream.PayloadEBPF, Data: Object()}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Load(t.Context(), img); err != nil {
		t.Fatalf("load while attached: %v", err)
	}
	if d.Mode() != AttachNative || !strings.Contains(ipLink(t, pair.Host, pair.HostIf), "xdp") {
		t.Fatalf("after the load: mode %v, link %s", d.Mode(), ipLink(t, pair.Host, pair.HostIf))
	}
	// The new program answers with the image's anchor parameters.
	h = hintOf()
	if got := hitsOf(h); got != len(h.Anchors) || len(h.Anchors) == 0 {
		t.Fatalf("image program: %d of %d anchors hit", got, len(h.Anchors))
	}
}

// TestBackend: the registry finds the namespace's veth and opens it by
// "xdp:IFACE"; "auto" never picks XDP.
func TestBackend(t *testing.T) {
	requireBPF(t)
	pair := testutil.NewVethPair(t)
	b, err := NewBackend(Options{Netns: "/var/run/netns/" + pair.Host.Name, Mode: AttachGeneric})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := nic.NewRegistry(b)
	if err != nil {
		t.Fatal(err)
	}
	found, err := reg.Discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Address != pair.HostIf || found[0].Auto || found[0].Problem != "" {
		t.Fatalf("discovered %+v, want only %s, usable, not auto", found, pair.HostIf)
	}
	d, err := reg.Open(t.Context(), "xdp:"+pair.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if info := d.Info(); info.Kind != nic.KindXDP || info.Address != pair.HostIf {
		t.Fatalf("opened %+v", info)
	}
	if !strings.Contains(ipLink(t, pair.Host, pair.HostIf), "xdpgeneric") {
		t.Fatal("xdp:IFACE did not attach the program")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Open(t.Context(), "auto"); !errors.Is(err, nic.ErrNoDevice) {
		t.Fatalf("auto with only xdp: %v, want ErrNoDevice", err)
	}
	if _, err := reg.Open(t.Context(), "xdp"); !errors.Is(err, nic.ErrNoDevice) {
		t.Fatalf("xdp without an interface: %v, want ErrNoDevice", err)
	}
}
