//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// Names in the BPF object (bpf/kvlp.c) the Go side relies on.
const (
	ProgramName = kvlpProgKvlpXdp
	mapIndex    = kvlpMapKvlpIndex
	mapEvents   = kvlpMapKvlpEvents
	mapCounters = kvlpMapKvlpCounters
	varPort     = kvlpVarKvlpPort
	varGeneric  = kvlpVarKvlpGeneric
)

// Name is the device's model name in Info.
const Name = "kvloom xdp"

// Object returns the BPF ELF object built into this package (bpf/kvlp.c
// compiled by bpf2go), for building xdp images (kvloom image build).
func Object() []byte { return slices.Clone(_KvlpBytes) }

// Device is the XDP backend. It is safe for concurrent use.
type Device struct {
	opts Options
	log  *slog.Logger
	slot *bitstream.Slot

	ifindex  int
	lineRate float64

	loadMu  sync.Mutex // serialises loads, so pending belongs to the one running
	pending *config    // what the image being loaded configures, for SwapXDP

	// mu guards the live program, its configuration and the table. A
	// request's matching holds it shared; table updates and program swaps
	// hold it exclusively, so a request sees one consistent index.
	mu     sync.RWMutex
	prog   *program
	cfg    config
	tbl    *table
	closed bool

	inflight chan struct{} // one token per request in flight
	stop     chan struct{} // closed by Close: requests give up
	wg       sync.WaitGroup

	statsMu sync.Mutex
	stats   nic.Stats
}

var (
	_ nic.Device          = (*Device)(nil)
	_ bitstream.XDPTarget = (*Device)(nil)
)

// config is what a loaded object or image sets.
type config struct {
	match          matcher.Options // normalised by matcher.New
	params         matcher.AnchorParams
	capacity       int
	maxEntryTokens int
	image          string
}

// program is one loaded collection and what hangs off it.
type program struct {
	coll     *ebpf.Collection
	prog     *ebpf.Program
	index    *ebpf.Map
	events   *ebpf.Map
	counters *ebpf.Map
	port     *ebpf.Variable
	generic  *ebpf.Variable
	link     link.Link  // nil when not attached
	mode     AttachMode // the mode it is attached in (never AttachAuto once attached)
	reader   *ringbuf.Reader
	done     chan struct{} // closed when the reader goroutine has returned
}

// Open loads the program (Options.Image through bitstream's xdp loader, or
// the built-in object), fills nothing into its index yet, starts reading its
// ring buffer and attaches it to Options.Interface. Close detaches it.
func Open(ctx context.Context, opts Options) (*Device, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := CheckKernel(); err != nil {
		return nil, fmt.Errorf("open xdp device: %w", err)
	}
	d := &Device{
		opts:     opts,
		log:      opts.Logger.With("backend", "xdp", "interface", opts.Interface),
		inflight: make(chan struct{}, opts.RequestQueueDepth),
		stop:     make(chan struct{}),
	}
	if opts.Interface != "" {
		err := inNetns(opts.Netns, func() error {
			ifi, err := net.InterfaceByName(opts.Interface)
			if err != nil {
				return err
			}
			d.ifindex = ifi.Index
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("open xdp device on %s: %w: %w", opts.Interface, nic.ErrNoDevice, err)
		}
		if opts.Netns == "" {
			d.lineRate = linkSpeedGbps(opts.Interface)
		}
	}
	loader, err := bitstream.NewXDPLoader(bitstream.XDPOptions{Target: d, Program: ProgramName})
	if err != nil {
		return nil, fmt.Errorf("open xdp device: %w", err)
	}
	d.slot = bitstream.NewSlot(loader, bitstream.SlotOptions{Trust: opts.Trust, Insecure: opts.Insecure, Require: opts.Require, Logger: opts.Logger})
	if opts.Image != nil {
		err = d.Load(ctx, opts.Image)
	} else {
		err = d.loadBuiltin(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("open xdp device: %w", err)
	}
	return d, nil
}

// CheckKernel reports whether the running kernel can load and run the
// program: BPF ring buffers, bpf_loop in XDP programs and BPF_PROG_TEST_RUN.
// The error names what is missing and the kernel that has it.
func CheckKernel() error {
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return kernelErr("BPF ring buffers (Linux 5.8)", err)
	}
	if err := features.HaveProgramHelper(ebpf.XDP, asm.FnLoop); err != nil {
		return kernelErr("bpf_loop in XDP programs (Linux 5.17)", err)
	}
	return nil
}

func kernelErr(what string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("probe %s: %w: run as root or with CAP_BPF and CAP_NET_ADMIN", what, err)
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("kernel lacks %s: %w: %w", what, ErrKernel, err)
	}
	return fmt.Errorf("probe %s: %w", what, err)
}

// linkSpeedGbps reads the interface's speed from sysfs; 0 when unknown.
func linkSpeedGbps(ifname string) float64 {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", ifname, "speed"))
	if err != nil {
		return 0
	}
	mbps, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || mbps <= 0 {
		return 0
	}
	return float64(mbps) / 1000
}

// configFor derives a configuration from the options and, when m is not
// nil, an image manifest's matcher parameters.
func (d *Device) configFor(m *bitstream.Manifest, image string) (config, error) {
	mo := d.opts.Matcher
	capacity, maxTok := d.opts.TableCapacity, d.opts.MaxEntryTokens
	if m != nil {
		mp := m.Matcher
		if mp.MinMatch > 0 {
			mo.MinLen = mp.MinMatch
		}
		if mp.KGram > 0 {
			mo.AnchorK = mp.KGram
		}
		if mp.BlockTokens > 0 {
			mo.BlockSize = mp.BlockTokens
		}
		if capacity == 0 {
			capacity = mp.TableCapacity
		}
		if maxTok == 0 {
			maxTok = mp.ChunkTokens
		}
	}
	ix, err := matcher.New(mo)
	if err != nil {
		return config{}, fmt.Errorf("matcher parameters: %w: %w", nic.ErrIncompatibleImage, err)
	}
	c := config{match: ix.Options(), params: ix.AnchorParams(), capacity: capacity, maxEntryTokens: maxTok, image: image}
	if m != nil && m.Matcher.AnchorWindow > 0 && m.Matcher.AnchorWindow != c.match.MinLen {
		return config{}, fmt.Errorf("matcher.anchor_window %d: anchors guarantee a shared k-gram in windows of min_match (%d) tokens: %w", m.Matcher.AnchorWindow, c.match.MinLen, nic.ErrIncompatibleImage)
	}
	if c.capacity == 0 {
		c.capacity = DefaultTableCapacity
	}
	if c.maxEntryTokens == 0 {
		c.maxEntryTokens = DefaultMaxEntryTokens
	}
	c.maxEntryTokens = min(c.maxEntryTokens, c.match.MaxPromptLen)
	return c, nil
}

// loadBuiltin loads the object compiled into the package.
func (d *Device) loadBuiltin(ctx context.Context) error {
	cfg, err := d.configFor(nil, "built-in kvlp_xdp")
	if err != nil {
		return err
	}
	spec, err := loadKvlp()
	if err != nil {
		return fmt.Errorf("load built-in object: %w", err)
	}
	if d.opts.Mode == AttachOffload {
		// An offloaded program is verified and translated for the NIC at
		// load time, so the kernel must know the device then.
		spec.Programs[ProgramName].Ifindex = uint32(d.ifindex)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if d.opts.Mode == AttachOffload {
			return fmt.Errorf("load built-in object for offload to %s%s: %w", d.opts.Interface, offloadHint, err)
		}
		return fmt.Errorf("load built-in object into the kernel: %w", err)
	}
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	if err := d.swap(ctx, coll, ProgramName, cfg); err != nil {
		coll.Close()
		return err
	}
	return nil
}

// Load replaces the program with an xdp image's, through bitstream's xdp
// loader: the image must be trusted (or Insecure set) and compatible, the
// kernel verifies its program, and the table is copied into its index map
// before the switch. The previous program stays attached until then, and
// stays live if anything fails. Requests in flight finish on the program
// they started with.
func (d *Device) Load(ctx context.Context, img *bitstream.Image) error {
	if img == nil {
		return fmt.Errorf("load image: nil image: %w", nic.ErrBadRequest)
	}
	m := img.Manifest()
	cfg, err := d.configFor(&m, img.Ref().Name+"@"+img.Ref().Version)
	if err != nil {
		return fmt.Errorf("load image %s: %w", img, err)
	}
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	d.pending = &cfg
	defer func() { d.pending = nil }()
	if err := d.slot.Load(ctx, img); err != nil {
		if errors.Is(err, bitstream.ErrIncompatible) && !errors.Is(err, nic.ErrIncompatibleImage) {
			return fmt.Errorf("%w: %w", nic.ErrIncompatibleImage, err)
		}
		return err
	}
	return nil
}

// SwapXDP implements bitstream.XDPTarget: the xdp loader hands over a
// verified collection, which becomes live here.
func (d *Device) SwapXDP(ctx context.Context, coll *ebpf.Collection, program string) error {
	cfg := d.pending
	if cfg == nil {
		return errors.New("swap xdp program: no load in progress (SwapXDP is called by the device's own loader)")
	}
	return d.swap(ctx, coll, program, *cfg)
}

// swap makes coll's program live with cfg. Callers hold loadMu. On error
// nothing changed and the caller still owns coll.
func (d *Device) swap(ctx context.Context, coll *ebpf.Collection, name string, cfg config) error {
	p, err := bind(coll, name)
	if err != nil {
		return fmt.Errorf("%w: %w", nic.ErrIncompatibleImage, err)
	}
	if err := p.port.Set(d.opts.Port); err != nil {
		return fmt.Errorf("set kvlp_port: %w", err)
	}

	d.mu.Lock()
	old, err := d.swapLocked(ctx, p, cfg)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	// The old reader goroutine may be in a callback that calls Chunks, so
	// it is stopped only now that the lock is free.
	if old != nil {
		old.stopReader()
		if old.link != nil && old.link != p.link {
			old.link.Close()
		}
		old.coll.Close()
	}
	d.log.Info("xdp_program_live", "image", cfg.image, "mode", p.mode.String(), "port", d.opts.Port, "entries", d.Stats().TableEntries)
	return nil
}

// swapLocked fills p's index from the table, starts its reader, attaches it
// and makes it live; it returns the program it replaced. Callers hold mu.
func (d *Device) swapLocked(ctx context.Context, p *program, cfg config) (*program, error) {
	if d.closed {
		return nil, fmt.Errorf("swap xdp program: %w", nic.ErrClosed)
	}
	// The new program gets the whole table, re-anchored with its parameters.
	tbl := newTable(cfg.params, cfg.match.BlockSize, cfg.capacity, int(p.index.MaxEntries()))
	if d.tbl != nil {
		for _, e := range d.tbl.byRank() {
			refs := tbl.refsOf(&e.Entry)
			if _, dup := tbl.entries[e.Key]; dup {
				continue
			}
			if !tbl.fits(refs) || len(e.Tokens) > cfg.maxEntryTokens {
				return nil, fmt.Errorf("the table's %d entries do not fit the new program (capacity %d entries, %d index slots): %w", len(d.tbl.entries), cfg.capacity, p.index.MaxEntries(), nic.ErrIncompatibleImage)
			}
			tbl.add(e.Entry, refs)
		}
	}
	if err := writeSlots(p.index, tbl, keysOf(tbl.slots)); err != nil {
		return nil, fmt.Errorf("fill the new index map: %w", err)
	}
	if err := p.startReader(d.log, d.opts.OnPrefetch, d.opts.OnHintDone); err != nil {
		return nil, err
	}
	if err := d.attach(ctx, p); err != nil {
		// Safe under mu: p never ran, so its reader has no callback in
		// flight that could wait for mu.
		p.stopReader()
		return nil, err
	}
	old := d.prog
	d.prog, d.tbl, d.cfg = p, tbl, cfg
	return old, nil
}

// bind finds and checks what the Go side needs in a loaded collection.
func bind(coll *ebpf.Collection, name string) (*program, error) {
	p := &program{coll: coll, prog: coll.Programs[name], index: coll.Maps[mapIndex], events: coll.Maps[mapEvents], counters: coll.Maps[mapCounters], port: coll.Variables[varPort], generic: coll.Variables[varGeneric]}
	switch {
	case p.prog == nil || p.prog.Type() != ebpf.XDP:
		return nil, fmt.Errorf("object has no XDP program %q", name)
	case p.index == nil || p.index.Type() != ebpf.Hash || p.index.KeySize() != 16 || p.index.ValueSize() != 24:
		return nil, fmt.Errorf("object has no hash map %s with 16-byte keys and 24-byte values", mapIndex)
	case p.events == nil || p.events.Type() != ebpf.RingBuf:
		return nil, fmt.Errorf("object has no ring buffer %s", mapEvents)
	case p.counters == nil || p.counters.Type() != ebpf.PerCPUArray || p.counters.ValueSize() != 8 || p.counters.MaxEntries() < uint32(NumCounters):
		return nil, fmt.Errorf("object has no per-CPU array %s of %d counters", mapCounters, NumCounters)
	case p.port == nil || p.port.Size() != 2 || p.port.ReadOnly():
		return nil, fmt.Errorf("object has no writable 16-bit variable %s", varPort)
	case p.generic == nil || p.generic.Size() != 1 || p.generic.ReadOnly():
		return nil, fmt.Errorf("object has no writable 8-bit variable %s", varGeneric)
	}
	return p, nil
}

// attach attaches p's program, or moves the live link onto it. Auto mode
// tries the driver's native XDP first and falls back to generic, so that
// the program knows which one it runs in (kvlp_generic).
func (d *Device) attach(ctx context.Context, p *program) error {
	if d.opts.Interface == "" {
		return p.generic.Set(uint8(0)) // BPF_PROG_TEST_RUN feeds it plain frames
	}
	if d.prog != nil && d.prog.link != nil {
		if err := p.setMode(d.prog.mode); err != nil {
			return err
		}
		if err := d.prog.link.Update(p.prog); err != nil {
			return fmt.Errorf("switch the XDP link on %s to the new program: %w", d.opts.Interface, err)
		}
		p.link = d.prog.link
		return nil
	}
	modes := []AttachMode{d.opts.Mode}
	if d.opts.Mode == AttachAuto {
		modes = []AttachMode{AttachNative, AttachGeneric}
	}
	var errs []error
	for _, m := range modes {
		err := d.attachMode(p, m)
		if err == nil {
			d.log.Info("xdp_attached", "ifindex", d.ifindex, "mode", m.String())
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *program) setMode(m AttachMode) error {
	var g uint8
	if m == AttachGeneric {
		g = 1
	}
	if err := p.generic.Set(g); err != nil {
		return fmt.Errorf("set %s: %w", varGeneric, err)
	}
	p.mode = m
	return nil
}

func (d *Device) attachMode(p *program, m AttachMode) error {
	if err := p.setMode(m); err != nil {
		return err
	}
	flags := map[AttachMode]link.XDPAttachFlags{AttachGeneric: link.XDPGenericMode, AttachNative: link.XDPDriverMode, AttachOffload: link.XDPOffloadMode}[m]
	err := inNetns(d.opts.Netns, func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: d.ifindex, Flags: flags})
		p.link = l
		return err
	})
	if err == nil {
		return nil
	}
	hint := ""
	switch m {
	case AttachNative:
		hint = " (the driver may lack native XDP: try generic)"
	case AttachOffload:
		hint = offloadHint
	}
	return fmt.Errorf("attach %s to %s in %v mode%s: %w", ProgramName, d.opts.Interface, m, hint, err)
}

// Mode is the mode the program is attached in: AttachGeneric, AttachNative
// or AttachOffload; AttachAuto when it is not attached to an interface.
func (d *Device) Mode() AttachMode {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.prog == nil || d.prog.link == nil {
		return AttachAuto
	}
	return d.prog.mode
}

// offloadHint explains an offload failure.
const offloadHint = " (offload needs a NIC that runs BPF itself, such as Netronome/Corigine nfp, and a program whose maps and helpers it supports; kvlp_xdp uses a ring buffer and bpf_loop, which no offload target has)"

// Info describes the device.
func (d *Device) Info() nic.Info {
	d.mu.RLock()
	cfg := d.cfg
	d.mu.RUnlock()
	addr := d.opts.Interface
	if addr == "" {
		addr = "test-run"
	}
	return nic.Info{
		Kind:                 nic.KindXDP,
		Name:                 Name,
		Address:              addr,
		Capabilities:         []string{nic.CapExactMatch, nic.CapAnchorOnly, nic.CapPrefetch},
		TableCapacity:        cfg.capacity,
		MaxEntryTokens:       cfg.maxEntryTokens,
		MaxRequestTokens:     cfg.match.MaxPromptLen,
		LineRateGbps:         d.lineRate,
		RequestQueueDepth:    d.opts.RequestQueueDepth,
		CompletionQueueDepth: d.opts.EventBuffer,
		Image:                cfg.image,
		Matcher:              cfg.match,
	}
}

// Slot returns the image slot, for status reports.
func (d *Device) Slot() *bitstream.Slot { return d.slot }

// Stats returns the device's counters.
func (d *Device) Stats() nic.Stats {
	d.mu.RLock()
	entries, capacity := 0, d.cfg.capacity
	if d.tbl != nil {
		entries = len(d.tbl.entries)
	}
	d.mu.RUnlock()
	d.statsMu.Lock()
	s := d.stats
	d.statsMu.Unlock()
	s.TableEntries, s.TableCapacity = entries, capacity
	return s
}

// Chunks lists every resident chunk (or prefix block) behind an index key:
// a ring-buffer event names one of them, the representative the BPF map
// holds.
func (d *Device) Chunks(saltID, fingerprint uint64) []matcher.ChunkKey {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.tbl == nil {
		return nil
	}
	s := d.tbl.slots[slotKey{saltID, fingerprint}]
	if s == nil {
		return nil
	}
	var out []matcher.ChunkKey
	for _, p := range s.postings {
		if !slices.Contains(out, p.e.Key) {
			out = append(out, p.e.Key)
		}
	}
	for _, b := range s.blocks {
		if !slices.Contains(out, b.key) {
			out = append(out, b.key)
		}
	}
	return out
}

// Close stops accepting requests, fails those in flight with
// nic.ErrClosed, detaches the program, stops the ring-buffer reader and
// unloads everything.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	p := d.prog
	d.prog = nil
	d.mu.Unlock()
	d.wg.Wait()
	if p == nil {
		return nil
	}
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from %s: %w", d.opts.Interface, err))
		}
	}
	p.stopReader()
	p.coll.Close()
	d.log.Info("xdp_closed")
	return errors.Join(errs...)
}

func (d *Device) count(f func(s *nic.Stats)) {
	d.statsMu.Lock()
	f(&d.stats)
	d.statsMu.Unlock()
}

// inNetns runs fn on a thread inside the network namespace at path (the
// caller's own when path is empty), then puts the thread back.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return withNetns(path, fn)
}

// keysOf returns a map's keys.
func keysOf(m map[slotKey]*slot) []slotKey {
	out := make([]slotKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// byRank lists the entries highest rank first (key order on ties), the
// order in which a smaller table keeps them.
func (t *table) byRank() []*hostEntry {
	out := make([]*hostEntry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *hostEntry) int {
		if a.Rank != b.Rank {
			if a.Rank > b.Rank {
				return -1
			}
			return 1
		}
		return strings.Compare(string(a.Key[:]), string(b.Key[:]))
	})
	return out
}
