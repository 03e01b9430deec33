package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic/wire"
)

const defaultPort = wire.DefaultPort

// AttachMode selects how the program is attached to its interface.
type AttachMode int

// Attach modes. The zero value lets the kernel choose: the driver's native
// XDP where it has one, generic (skb) XDP otherwise.
const (
	AttachAuto    AttachMode = iota
	AttachGeneric            // XDP_FLAGS_SKB_MODE: any interface, after the skb is built
	AttachNative             // XDP_FLAGS_DRV_MODE: in the driver, before any allocation
	AttachOffload            // XDP_FLAGS_HW_MODE: on the NIC itself (Netronome/Corigine nfp)
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachGeneric:
		return "generic"
	case AttachNative:
		return "native"
	case AttachOffload:
		return "offload"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// ParseAttachMode parses "auto", "generic" (or "skb"), "native" (or "drv")
// and "offload" (or "hw").
func ParseAttachMode(s string) (AttachMode, error) {
	switch s {
	case "", "auto":
		return AttachAuto, nil
	case "generic", "skb":
		return AttachGeneric, nil
	case "native", "drv":
		return AttachNative, nil
	case "offload", "hw":
		return AttachOffload, nil
	}
	return 0, fmt.Errorf("parse attach mode %q: want auto, generic, native or offload: %w", s, ErrOptions)
}

// Defaults of Options' zero values.
const (
	DefaultTableCapacity     = 4096
	DefaultMaxEntryTokens    = 8192
	DefaultRequestQueueDepth = 64
	DefaultEventBuffer       = 256
)

// PrefetchEvent is one ring-buffer event: the program found an anchor of a
// hint in the hot index and the daemon should start fetching the chunk.
// Chunk is the chunk the index map holds for the anchor; when several
// resident chunks share the anchor, Device.Chunks lists them all.
type PrefetchEvent struct {
	RequestID   uint64
	SaltID      uint64
	Fingerprint uint64
	TokenOffset uint32 // of the anchor in the prompt
	Chunk       matcher.ChunkKey
	ChunkOffset uint32 // of the anchor in the chunk
	FragIndex   uint16
	Entry       uint16 // entry index within the hint packet
	Ifindex     uint32 // interface the hint arrived on; 0 for Submit's test runs
	// Time is when the program saw the hint (CLOCK_MONOTONIC, as the
	// kernel's bpf_ktime_get_ns).
	Time time.Duration
}

// HintDone closes one hint's hits: every PrefetchEvent of the hint was
// delivered before it. Events is the number of hit records the program
// wrote; it is below Hits when the ring buffer was full.
type HintDone struct {
	RequestID uint64
	SaltID    uint64
	FragIndex uint16
	FragCount uint16
	Entries   int // anchors in the hint
	Hits      int
	Events    int
	Ifindex   uint32
	Time      time.Duration
}

// Options configure a Device. The zero value of every field selects its
// documented default.
type Options struct {
	// Interface is the network interface the program is attached to. Empty
	// means not attached: the program still runs in the kernel, fed by
	// Submit through BPF_PROG_TEST_RUN, and Info.Address is "test-run".
	Interface string
	// Netns is the path of the network namespace the interface lives in
	// (for example /var/run/netns/NAME); empty means the caller's.
	Netns string
	// Mode is the attach mode; zero lets the kernel choose.
	Mode AttachMode
	// Port is the UDP port KVLP hints arrive on; zero means wire.DefaultPort.
	Port uint16
	// Image is loaded at Open through bitstream's xdp loader (trust,
	// compatibility, atomic switch). Nil loads the object built into this
	// package (bpf/kvlp.c, compiled by bpf2go), which needs no signature
	// because it is part of the binary; Info.Image then says "built-in".
	Image *bitstream.Image
	// Trust, Insecure and Require are the image slot's admission rules
	// (bitstream.SlotOptions).
	Trust    *bitstream.KeyRing
	Insecure bool
	Require  bitstream.Requirements
	// Matcher are the matching parameters of the built-in object; an
	// image's manifest overrides MinLen, AnchorK and BlockSize. Zero fields
	// take matcher's defaults.
	Matcher matcher.Options
	// TableCapacity is how many entries the table holds; zero means the
	// image's matcher.table_capacity, else DefaultTableCapacity. The BPF
	// map's own size (its max_entries, in anchors) bounds it too.
	TableCapacity int
	// MaxEntryTokens is the longest entry; zero means the image's
	// matcher.chunk_tokens, else DefaultMaxEntryTokens.
	MaxEntryTokens int
	// RequestQueueDepth bounds the requests in flight; more are refused
	// with nic.ErrQueueFull. Zero means DefaultRequestQueueDepth.
	RequestQueueDepth int
	// EventBuffer is the capacity of each request's event channel; zero
	// means DefaultEventBuffer.
	EventBuffer int
	// OnPrefetch receives every ring-buffer event, from the device's reader
	// goroutine, in order; it must not block for long (a full ring buffer
	// loses events, counted in Counters). Nil counts and discards them.
	OnPrefetch func(PrefetchEvent)
	// OnHintDone receives the end of every hint that had hits, after its
	// events, from the same goroutine; nil discards them. A prefetcher can
	// batch a hint's fetches on it.
	OnHintDone func(HintDone)
	// Logger receives attach, load and ring-buffer events; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Port == 0 {
		o.Port = defaultPort
	}
	if o.RequestQueueDepth == 0 {
		o.RequestQueueDepth = DefaultRequestQueueDepth
	}
	if o.EventBuffer == 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.Mode < AttachAuto || o.Mode > AttachOffload {
		errs = append(errs, fmt.Errorf("field Mode is %d, want AttachAuto..AttachOffload", int(o.Mode)))
	}
	if o.Interface == "" && o.Mode != AttachAuto {
		errs = append(errs, fmt.Errorf("field Mode is %v without an Interface to attach to", o.Mode))
	}
	if o.Netns != "" && o.Interface == "" {
		errs = append(errs, fmt.Errorf("field Netns is %q without an Interface", o.Netns))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"TableCapacity", o.TableCapacity}, {"MaxEntryTokens", o.MaxEntryTokens},
		{"RequestQueueDepth", o.RequestQueueDepth}, {"EventBuffer", o.EventBuffer},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("field %s is %d, negative", f.name, f.v))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("xdp options: %w: %w", ErrOptions, errors.Join(errs...))
}
