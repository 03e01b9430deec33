package simnic

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/sim"
)

// Defaults of Options.
const (
	DefaultBARSize        = 16 << 20
	DefaultMaxEntryTokens = 16 << 10
	DefaultMaxReqTokens   = 128 << 10
)

// Options configure a Model (and a Device, which adds the fields marked so).
// The zero value is usable: the built-in defaults of sim.DefaultPipeline and
// matcher.Options.
type Options struct {
	// Pipeline times the device and sizes its table (TableEntries) and its
	// rings (RequestQueueDepth, CompletionQueueDepth, powers of two up to
	// 1024 and 2048). A zero ClockHz selects sim.DefaultPipeline().
	Pipeline sim.Pipeline
	// Matcher holds the matching parameters (MinLen, AnchorK, BlockSize,
	// MaxMatches, MaxCandidates; MaxPromptLen bounds a request). Zero
	// fields select the matcher's defaults; MaxPromptLen's default is
	// DefaultMaxReqTokens, and it may not exceed the card memory.
	Matcher matcher.Options
	// MaxEntryTokens is the longest table entry. Zero means
	// DefaultMaxEntryTokens; a record must fit the TABLE window.
	MaxEntryTokens int
	// BARSize is the simulated BAR0 of New; zero means DefaultBARSize. A
	// Model on a file takes the file's size.
	BARSize int
	// KVBytesPerToken sizes the KV each prefetch reads, for its network
	// time. Zero times prefetches by their per-message cost only.
	KVBytesPerToken int
	// Blank powers the device on with no image (MAGIC reads 0), like a card
	// before it is programmed; it serves nothing until ConfigureSim.
	Blank bool
	// PollMin and PollMax bound the backoff of Serve's doorbell polling.
	// Zero means 1µs and 200µs.
	PollMin, PollMax time.Duration
	// Logger receives faults; nil discards them.
	Logger *slog.Logger

	// Device only: how the driver behaves (its Kick is the model's).
	Driver nic.DriverOptions
	// Device only: image trust and the control plane's requirements for
	// Load (bitstream.SlotOptions).
	Trust    *bitstream.KeyRing
	Insecure bool
	Require  bitstream.Requirements
}

// config is everything a Model's behaviour depends on, validated.
type config struct {
	pipe           sim.Pipeline
	match          matcher.Options // with defaults filled in
	maxEntryTokens int
	reqEntries     uint32
	cplEntries     uint32
	dataOff        uint32
	dataSize       uint32
	kvBytes        int
	image          bitstream.ImageRef // zero: built-in defaults
	imageID        [16]byte
	imageVersion   uint32
}

// newConfig validates opts for a BAR of barSize bytes.
func newConfig(opts Options, barSize int) (config, error) {
	c := config{pipe: opts.Pipeline, match: opts.Matcher, maxEntryTokens: opts.MaxEntryTokens, kvBytes: opts.KVBytesPerToken}
	if c.pipe.ClockHz == 0 {
		c.pipe = sim.DefaultPipeline()
	}
	if c.maxEntryTokens == 0 {
		c.maxEntryTokens = DefaultMaxEntryTokens
	}
	if c.match.MaxPromptLen == 0 {
		c.match.MaxPromptLen = DefaultMaxReqTokens
	}
	return c.finish(barSize)
}

// finish checks c against the register map and a BAR of barSize bytes and
// fills in the derived fields.
func (c config) finish(barSize int) (config, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrConfig)...))
	}
	// Completions and descriptors are the register map's, whatever the
	// generic pipeline model assumes.
	c.pipe.DescriptorBytes = nic.ReqDescSize
	c.pipe.CompletionBytes = nic.CplEntrySize
	if err := c.pipe.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("pipeline: %w: %w", ErrConfig, err))
	}
	if barSize < nic.MinBARSize || barSize%8 != 0 || barSize > 1<<32 {
		bad("BAR of %d bytes, want a multiple of 8 from %d to 4 GiB", barSize, nic.MinBARSize)
	} else {
		c.dataOff = nic.WinDataOffset
		c.dataSize = uint32(barSize - nic.WinDataOffset)
	}
	ring := func(name string, n, window, entry int) uint32 {
		if n <= 0 || n > window/entry || bits.OnesCount(uint(n)) != 1 {
			bad("%s %d, want a power of two up to %d (the register map's window)", name, n, window/entry)
			return 0
		}
		return uint32(n)
	}
	c.reqEntries = ring("request_queue_depth", c.pipe.RequestQueueDepth, nic.WinReqRingSize, nic.ReqDescSize)
	c.cplEntries = ring("completion_queue_depth", c.pipe.CompletionQueueDepth, nic.WinCplRingSize, nic.CplEntrySize)
	if c.pipe.TableEntries <= 0 || c.pipe.TableEntries > 1<<24 {
		bad("table_entries %d, want 1 to %d", c.pipe.TableEntries, 1<<24)
	}
	if maxTok := (nic.WinTableSize - nic.TblRecordSize) / 4; c.maxEntryTokens <= 0 || c.maxEntryTokens > maxTok {
		bad("max entry tokens %d, want 1 to %d (a record must fit the TABLE window)", c.maxEntryTokens, maxTok)
	}
	if c.dataSize > 0 && (c.match.MaxPromptLen <= 0 || c.match.MaxPromptLen > int(c.dataSize/4)) {
		bad("max request tokens %d, want 1 to %d (the card memory holds that many tokens)", c.match.MaxPromptLen, c.dataSize/4)
	}
	if c.kvBytes < 0 {
		bad("KV bytes per token %d, want ≥ 0", c.kvBytes)
	}
	ix, err := matcher.New(c.match)
	if err != nil {
		errs = append(errs, fmt.Errorf("matcher options: %w: %w", ErrConfig, err))
	} else {
		c.match = ix.Options()
		if c.maxEntryTokens > c.match.MaxPromptLen {
			c.maxEntryTokens = c.match.MaxPromptLen
		}
	}
	if err := errors.Join(errs...); err != nil {
		return config{}, err
	}
	return c, nil
}

// withImage returns c as a sim image configures it: its pipeline and
// matcher parameters over c's, its identity in the ID registers.
func (c config) withImage(img bitstream.SimConfig, barSize int) (config, error) {
	p := img.Pipeline
	c.pipe.ClockHz = p.ClockMHz * 1e6
	c.pipe.Lanes = p.Lanes
	c.pipe.LookupCycles = p.LookupLatencyCycles
	c.pipe.RequestQueueDepth = p.RequestQueueDepth
	c.pipe.CompletionQueueDepth = p.CompletionQueueDepth
	c.pipe.PCIeBandwidth = p.PCIeGbps * 1e9 / 8
	c.pipe.NetworkBandwidth = p.NetworkGbps * 1e9 / 8
	m := img.Matcher
	if m.MinMatch > 0 {
		c.match.MinLen = m.MinMatch
	}
	if m.KGram > 0 {
		c.match.AnchorK = m.KGram
	}
	// anchor_window is not read: the matcher derives its winnowing window
	// from min_match and kgram (W = min_match − kgram + 1).
	if m.BlockTokens > 0 {
		c.match.BlockSize = m.BlockTokens
	}
	if m.ChunkTokens > 0 {
		c.maxEntryTokens = m.ChunkTokens
	}
	if m.TableCapacity > 0 {
		c.pipe.TableEntries = m.TableCapacity
	}
	c.image = img.Image
	c.imageID = [16]byte{}
	if id, err := hex.DecodeString(img.Image.ID); err == nil {
		copy(c.imageID[:], id)
	}
	c.imageVersion = packVersion(img.Image.Version)
	return c.finish(barSize)
}

// packVersion packs "M.m.p[-pre][+build]" into IMAGE_VERSION's fields,
// each saturating at 255.
func packVersion(v string) uint32 {
	v, _, _ = strings.Cut(v, "+")
	v, _, _ = strings.Cut(v, "-")
	var out uint32
	for i, part := range strings.SplitN(v, ".", 3) {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			n = 0
		}
		out |= uint32(min(n, 255)) << (16 - 8*i)
	}
	return out
}
