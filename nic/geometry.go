package nic

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/kvloom/kvloom/matcher"
)

// Geometry is what a device's identification and geometry registers say
// about the loaded image: the sizes the driver must respect.
type Geometry struct {
	RegmapVersion  uint32
	Features       uint32
	ImageID        [16]byte
	ImageVersion   uint32
	ClockKHz       uint32
	Lanes          uint32
	LookupCycles   uint32
	LineRateMbps   uint32
	PCIeMbps       uint32
	ReqEntries     uint32
	CplEntries     uint32
	DataOffset     uint32
	DataSize       uint32
	TableCapacity  uint32
	MaxEntryTokens uint32
	MaxReqTokens   uint32
	MinMatchTokens uint32
	AnchorK        uint32
	BlockTokens    uint32
	MaxMatches     uint32
	MaxCandidates  uint32
	Epoch          uint32
}

// CheckIdentity reads MAGIC and REGMAP_VERSION and reports whether this
// package can drive the device: a kvloom image of the same major version
// and at least its minor version. It only reads.
func CheckIdentity(bar *Region) error {
	if bar.Size() < MinBARSize {
		return fmt.Errorf("check identity: BAR of %#x bytes is smaller than the register map's %#x: %w", bar.Size(), MinBARSize, ErrIncompatibleImage)
	}
	if m := bar.Load32(RegMagic); m != RegMagicReset {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], m)
		return fmt.Errorf("check identity: MAGIC is %#08x (%q), want %#08x (\"KVLM\"): no kvloom image is loaded: %w", m, b[:], RegMagicReset, ErrIncompatibleImage)
	}
	v := bar.Load32(RegRegmapVersion)
	major, minor := v>>16, v&0xffff
	if major != RegmapMajor || minor < RegmapMinor {
		return fmt.Errorf("check identity: register map %d.%d, driver speaks %d.%d (same major, minor ≥ %d): %w", major, minor, RegmapMajor, RegmapMinor, RegmapMinor, ErrIncompatibleImage)
	}
	return nil
}

// ReadGeometry reads and validates the geometry registers against the
// windows of the register map and the BAR's size.
func ReadGeometry(bar *Region) (Geometry, error) {
	if err := CheckIdentity(bar); err != nil {
		return Geometry{}, err
	}
	g := Geometry{
		RegmapVersion:  bar.Load32(RegRegmapVersion),
		Features:       bar.Load32(RegFeatures),
		ImageVersion:   bar.Load32(RegImageVersion),
		ClockKHz:       bar.Load32(RegClockKHz),
		Lanes:          bar.Load32(RegLanes),
		LookupCycles:   bar.Load32(RegLookupCycles),
		LineRateMbps:   bar.Load32(RegLineRateMbps),
		PCIeMbps:       bar.Load32(RegPCIeMbps),
		ReqEntries:     bar.Load32(RegReqRingEntries),
		CplEntries:     bar.Load32(RegCplRingEntries),
		DataOffset:     bar.Load32(RegDataOffset),
		DataSize:       bar.Load32(RegDataSize),
		TableCapacity:  bar.Load32(RegTableCapacity),
		MaxEntryTokens: bar.Load32(RegMaxEntryTokens),
		MaxReqTokens:   bar.Load32(RegMaxReqTokens),
		MinMatchTokens: bar.Load32(RegMinMatchTokens),
		AnchorK:        bar.Load32(RegAnchorK),
		BlockTokens:    bar.Load32(RegBlockTokens),
		MaxMatches:     bar.Load32(RegMaxMatches),
		MaxCandidates:  bar.Load32(RegMaxCandidates),
		Epoch:          bar.Load32(RegEpoch),
	}
	binary.LittleEndian.PutUint64(g.ImageID[0:8], bar.Load64(RegImageID0))
	binary.LittleEndian.PutUint64(g.ImageID[8:16], bar.Load64(RegImageID1))
	if err := g.Validate(bar.Size()); err != nil {
		return Geometry{}, err
	}
	return g, nil
}

// Validate checks that the geometry fits the register map's windows and a
// BAR of barSize bytes.
func (g Geometry) Validate(barSize int) error {
	ring := func(name string, n uint32, window int, entry int) error {
		if n == 0 || bits.OnesCount32(n) != 1 || int(n)*entry > window {
			return fmt.Errorf("read geometry: %s is %d, want a power of two up to %d: %w", name, n, window/entry, ErrIncompatibleImage)
		}
		return nil
	}
	if err := ring("REQ_RING_ENTRIES", g.ReqEntries, WinReqRingSize, ReqDescSize); err != nil {
		return err
	}
	if err := ring("CPL_RING_ENTRIES", g.CplEntries, WinCplRingSize, CplEntrySize); err != nil {
		return err
	}
	end := uint64(g.DataOffset) + uint64(g.DataSize)
	if g.DataOffset < WinDataOffset || g.DataOffset%8 != 0 || g.DataSize < 4 || end > uint64(barSize) {
		return fmt.Errorf("read geometry: DATA at %#x+%#x does not lie inside the DATA window [%#x, %#x): %w", g.DataOffset, g.DataSize, WinDataOffset, barSize, ErrIncompatibleImage)
	}
	if g.TableCapacity == 0 {
		return fmt.Errorf("read geometry: TABLE_CAPACITY is 0: %w", ErrIncompatibleImage)
	}
	if g.MaxEntryTokens == 0 || TableRecordLen(int(g.MaxEntryTokens)) > WinTableSize {
		return fmt.Errorf("read geometry: MAX_ENTRY_TOKENS is %d, want 1..%d (a record must fit the TABLE window): %w", g.MaxEntryTokens, (WinTableSize-TblRecordSize)/4, ErrIncompatibleImage)
	}
	if g.MaxReqTokens == 0 || uint64(g.MaxReqTokens)*4 > uint64(g.DataSize) {
		return fmt.Errorf("read geometry: MAX_REQ_TOKENS is %d, want 1..%d (DATA_SIZE/4): %w", g.MaxReqTokens, g.DataSize/4, ErrIncompatibleImage)
	}
	for _, r := range []struct {
		name string
		v    uint32
	}{{"MIN_MATCH_TOKENS", g.MinMatchTokens}, {"ANCHOR_K", g.AnchorK}, {"BLOCK_TOKENS", g.BlockTokens}, {"MAX_MATCHES", g.MaxMatches}, {"MAX_CANDIDATES", g.MaxCandidates}} {
		if r.v == 0 {
			return fmt.Errorf("read geometry: %s is 0: %w", r.name, ErrIncompatibleImage)
		}
	}
	if _, err := matcher.New(g.MatcherOptions()); err != nil {
		return fmt.Errorf("read geometry: matcher parameters (MIN_MATCH_TOKENS %d, ANCHOR_K %d, BLOCK_TOKENS %d, MAX_MATCHES %d, MAX_CANDIDATES %d): %w: %w",
			g.MinMatchTokens, g.AnchorK, g.BlockTokens, g.MaxMatches, g.MaxCandidates, ErrIncompatibleImage, err)
	}
	return nil
}

// MatcherOptions returns the matcher parameters the device implements.
func (g Geometry) MatcherOptions() matcher.Options {
	return matcher.Options{
		MinLen:        int(g.MinMatchTokens),
		AnchorK:       int(g.AnchorK),
		BlockSize:     int(g.BlockTokens),
		MaxPromptLen:  int(g.MaxReqTokens),
		MaxMatches:    int(g.MaxMatches),
		MaxCandidates: int(g.MaxCandidates),
	}
}

// EntryLimits returns the bounds the device holds index entries to.
func (g Geometry) EntryLimits() EntryLimits {
	return EntryLimits{
		MaxTokens:   int(g.MaxEntryTokens),
		MinMatch:    int(g.MinMatchTokens),
		BlockTokens: int(g.BlockTokens),
	}
}

// Capabilities lists the Cap constants FEATURES announces.
func (g Geometry) Capabilities() []string {
	var caps []string
	if g.Features&FeaturesExactMatch != 0 {
		caps = append(caps, CapExactMatch)
	}
	if g.Features&FeaturesPrefetch != 0 {
		caps = append(caps, CapPrefetch)
	}
	if g.Features&FeaturesEvictByRank != 0 {
		caps = append(caps, CapEvictByRank)
	}
	return caps
}

// Info fills the fields of Info the registers determine; the backend adds
// kind, name, address and image name.
func (g Geometry) Info() Info {
	return Info{
		Capabilities:         g.Capabilities(),
		TableCapacity:        int(g.TableCapacity),
		MaxEntryTokens:       int(g.MaxEntryTokens),
		MaxRequestTokens:     int(g.MaxReqTokens),
		LineRateGbps:         float64(g.LineRateMbps) / 1000,
		RequestQueueDepth:    int(g.ReqEntries),
		CompletionQueueDepth: int(g.CplEntries),
		Matcher:              g.MatcherOptions(),
		Simulated:            g.Features&FeaturesSimulated != 0,
	}
}
