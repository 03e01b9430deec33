package kvcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// CacheGen is the CacheGen-style codec (CodecCacheGen), after CacheGen
// (Liu et al., SIGCOMM 2024) as LMCache ships it:
//
//   - change-based encoding: the tokens of a layer are cut into groups of
//     consecutive tokens; the first token of a group (the anchor) is
//     quantized on its own and every other token as its delta to the
//     decoded anchor, because neighbouring tokens' KV is similar and the
//     deltas are small;
//   - layer-wise quantization: per-channel uniform quantization whose bit
//     width depends on the layer group (first, middle, last third of the
//     layers) and on K vs V, more bits where errors hurt more (early
//     layers, keys);
//   - entropy coding of the quantized symbols with
//     github.com/klauspost/compress: each block is Huff0- or FSE-coded,
//     whichever is smaller (stored raw or as a run when neither helps).
//     CacheGen uses arithmetic coding with per-channel contexts; order-0
//     FSE/Huff0 per stream gives most of that gain without a GPU.
//
// Levels 1 (best quality) to CacheGenMaxLevel (smallest) pick the group
// size and bit widths; the level is stored in each layer's encoding, so
// one registered CacheGen decodes every level.
//
// Layer encoding (this comment is its specification): u8 version (1), u8 level, u8 group
// size, u8 anchor bits, u8 K delta bits, u8 V delta bits; then for K and
// for V: channels × bf16 anchor scales, channels × bf16 delta scales, the
// anchor symbol stream (groups × channels) and the delta symbol stream
// ((tokens − groups) × channels). A stream is blocks of at most 64 Ki
// symbols, each u8 mode (0 raw, 1 run, 2 Huff0, 3 FSE), uvarint length,
// bytes. A symbol is the zigzag code of a quantized value.
type CacheGen struct {
	level   int
	scratch *sync.Pool // *cachegenScratch: Huff0/FSE tables reused across calls
}

var _ Codec = (*CacheGen)(nil)

// CacheGenMaxLevel is the most aggressive level.
const CacheGenMaxLevel = 4

const (
	cachegenVersion   = 1
	cachegenHeader    = 6
	cachegenBlockSyms = 1 << 16
	cachegenMinBits   = 2
	cachegenMaxBits   = 8
)

const (
	cgModeRaw = iota
	cgModeRun
	cgModeHuff0
	cgModeFSE
)

// cachegenParams are one level's choices.
type cachegenParams struct {
	group        int
	anchorBits   uint8
	kBits, vBits [3]uint8 // delta bits per layer group: first, middle, last third
}

// cachegenLevels follows LMCache's CacheGen defaults in spirit (more bins
// for keys and for early layers) across four operating points; index 0 is
// unused. The group size is CacheGen's 10 tokens.
var cachegenLevels = [CacheGenMaxLevel + 1]cachegenParams{
	1: {group: 10, anchorBits: 8, kBits: [3]uint8{8, 7, 7}, vBits: [3]uint8{7, 7, 6}},
	2: {group: 10, anchorBits: 8, kBits: [3]uint8{6, 6, 5}, vBits: [3]uint8{6, 5, 5}},
	3: {group: 10, anchorBits: 8, kBits: [3]uint8{5, 4, 4}, vBits: [3]uint8{5, 4, 3}},
	4: {group: 10, anchorBits: 6, kBits: [3]uint8{4, 3, 3}, vBits: [3]uint8{3, 3, 2}},
}

type cachegenScratch struct {
	huff huff0.Scratch
	fse  fse.Scratch
	tmp  []byte
	syms []byte
	vals []float32
}

// NewCacheGen returns the codec at level 1..CacheGenMaxLevel.
func NewCacheGen(level int) (*CacheGen, error) {
	if level < 1 || level > CacheGenMaxLevel {
		return nil, fmt.Errorf("new cachegen codec: level %d, want 1..%d: %w", level, CacheGenMaxLevel, ErrUnsupported)
	}
	return &CacheGen{level: level, scratch: &sync.Pool{New: func() any { return &cachegenScratch{} }}}, nil
}

// ParseCacheGen reads a codec name "cachegen:L".
func ParseCacheGen(name string) (*CacheGen, error) {
	l, ok := strings.CutPrefix(name, "cachegen:")
	level, err := strconv.Atoi(l)
	if !ok || err != nil {
		return nil, fmt.Errorf("parse codec %q: want cachegen:1..cachegen:%d: %w", name, CacheGenMaxLevel, ErrUnknownCodec)
	}
	return NewCacheGen(level)
}

// Level is the codec's level.
func (c *CacheGen) Level() int { return c.level }

// ID implements Codec.
func (c *CacheGen) ID() CodecID { return CodecCacheGen }

// Name implements Codec.
func (c *CacheGen) Name() string { return "cachegen:" + strconv.Itoa(c.level) }

// cachegenLayerGroup is layer l's third of the model: 0, 1 or 2.
func cachegenLayerGroup(l, layers int) int { return min(3*l/layers, 2) }

func cgQMax(bits uint8) int32 { return 1<<(bits-1) - 1 }

// cgScale returns the smallest bf16 scale at least absmax/qmax, so that
// every value quantizes within ±qmax; zero when absmax is.
func cgScale(absmax float32, qmax int32) (uint16, error) {
	if absmax == 0 {
		return 0, nil
	}
	s := absmax / float32(qmax)
	b := BF16FromFloat32(s)
	if BF16ToFloat32(b) < s {
		b++
	}
	if f := BF16ToFloat32(b); !(f > 0 && f <= math.MaxFloat32) {
		return 0, fmt.Errorf("scale for magnitude %v is not a finite bf16: %w", absmax, ErrUnsupported)
	}
	return b, nil
}

func cgQuantize(x, s float32, qmax int32) int32 {
	if s == 0 {
		return 0
	}
	q := int32(math.Round(float64(x / s)))
	return min(max(q, -qmax), qmax)
}

func zigzag(q int32) byte   { return byte(uint32(q<<1) ^ uint32(q>>31)) }
func unzigzag(z byte) int32 { return int32(z>>1) ^ -int32(z&1) }
func (sc *cachegenScratch) grow(n int) {
	if cap(sc.syms) < n {
		sc.syms = make([]byte, n)
	}
	if cap(sc.vals) < n {
		sc.vals = make([]float32, n)
	}
}

// EncodeLayer implements Codec.
func (c *CacheGen) EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error) {
	if c == nil || c.level < 1 || c.level > CacheGenMaxLevel || c.scratch == nil {
		return dst, fmt.Errorf("cachegen encode: codec not built with NewCacheGen: %w", ErrUnsupported)
	}
	if err := lossyCheck(li, kv, "cachegen encode"); err != nil {
		return dst, err
	}
	p := cachegenLevels[c.level]
	g := cachegenLayerGroup(li.Index, li.Shape.Layers)
	bits := [2]uint8{p.kBits[g], p.vBits[g]}
	start := len(dst)
	dst = append(dst, cachegenVersion, byte(c.level), byte(p.group), p.anchorBits, bits[0], bits[1])
	sc := c.scratch.Get().(*cachegenScratch)
	defer c.scratch.Put(sc)
	ch := li.Shape.KVHeads * li.Shape.HeadDim
	n := li.Tokens * ch
	sc.grow(n)
	vals, syms := sc.vals[:n], sc.syms[:n]
	half := li.Shape.LayerBytes(li.Tokens) / 2
	groups := (li.Tokens + p.group - 1) / p.group
	for h, dsc := range []float32{li.Scales.K, li.Scales.V} {
		if err := DecodeFloat32(vals, li.Shape.DType, kv[h*half:(h+1)*half], dsc); err != nil {
			return dst[:start], fmt.Errorf("cachegen encode layer %d: %w", li.Index, err)
		}
		var err error
		if dst, err = cgEncodeHalf(dst, sc, vals, syms, li.Tokens, ch, p.group, groups, p.anchorBits, bits[h]); err != nil {
			return dst[:start], fmt.Errorf("cachegen encode layer %d %s: %w", li.Index, kvName(h), err)
		}
	}
	return dst, nil
}

// cgEncodeHalf quantizes one of K or V and appends its scales and streams.
// syms receives the anchor symbols first, then the deltas.
func cgEncodeHalf(dst []byte, sc *cachegenScratch, vals []float32, syms []byte, tokens, ch, group, groups int, aBits, dBits uint8) ([]byte, error) {
	aq, dq := cgQMax(aBits), cgQMax(dBits)
	aScale := make([]float32, ch)
	dScale := make([]float32, ch)
	for i, v := range vals {
		a := float32(math.Abs(float64(v)))
		if !(a <= math.MaxFloat32) {
			return dst, fmt.Errorf("row %d channel %d is %v: %w", i/ch, i%ch, v, ErrUnsupported)
		}
		if (i/ch)%group == 0 {
			aScale[i%ch] = max(aScale[i%ch], a)
		}
	}
	for c, m := range aScale {
		b, err := cgScale(m, aq)
		if err != nil {
			return dst, err
		}
		dst = binary.LittleEndian.AppendUint16(dst, b)
		aScale[c] = BF16ToFloat32(b)
	}
	// anchors, and the decoded anchors the deltas are taken against
	anchors := syms[:groups*ch]
	deltas := syms[groups*ch:]
	for gi := range groups {
		row := vals[gi*group*ch : gi*group*ch+ch]
		for c, v := range row {
			q := cgQuantize(v, aScale[c], aq)
			anchors[gi*ch+c] = zigzag(q)
			row[c] = float32(q) * aScale[c] // vals now holds the decoded anchor
		}
	}
	for t := range tokens {
		if t%group == 0 {
			continue
		}
		arow := vals[(t/group)*group*ch:]
		for c := range ch {
			d := vals[t*ch+c] - arow[c]
			vals[t*ch+c] = d
			dScale[c] = max(dScale[c], float32(math.Abs(float64(d))))
		}
	}
	for c, m := range dScale {
		b, err := cgScale(m, dq)
		if err != nil {
			return dst, err
		}
		dst = binary.LittleEndian.AppendUint16(dst, b)
		dScale[c] = BF16ToFloat32(b)
	}
	k := 0
	for t := range tokens {
		if t%group == 0 {
			continue
		}
		for c := range ch {
			deltas[k] = zigzag(cgQuantize(vals[t*ch+c], dScale[c], dq))
			k++
		}
	}
	dst = cgAppendStream(dst, sc, anchors)
	dst = cgAppendStream(dst, sc, deltas)
	return dst, nil
}

func cgAppendStream(dst []byte, sc *cachegenScratch, syms []byte) []byte {
	for off := 0; off < len(syms); off += cachegenBlockSyms {
		dst = cgAppendBlock(dst, sc, syms[off:min(off+cachegenBlockSyms, len(syms))])
	}
	return dst
}

func cgAppendBlock(dst []byte, sc *cachegenScratch, blk []byte) []byte {
	run := true
	for _, b := range blk[1:] {
		if b != blk[0] {
			run = false
			break
		}
	}
	if run {
		dst = append(dst, cgModeRun)
		dst = binary.AppendUvarint(dst, 1)
		return append(dst, blk[0])
	}
	mode, best := byte(cgModeRaw), blk
	sc.huff.Reuse = huff0.ReusePolicyNone
	if out, _, err := huff0.Compress1X(blk, &sc.huff); err == nil && len(out) < len(best) {
		sc.tmp = append(sc.tmp[:0], out...)
		mode, best = cgModeHuff0, sc.tmp
	}
	if out, err := fse.Compress(blk, &sc.fse); err == nil && len(out) < len(best) {
		mode, best = cgModeFSE, out
	}
	dst = append(dst, mode)
	dst = binary.AppendUvarint(dst, uint64(len(best)))
	return append(dst, best...)
}

// DecodeLayer implements Codec. Any level decodes.
func (c *CacheGen) DecodeLayer(dst []byte, li LayerInfo, enc []byte) ([]byte, error) {
	if err := lossyCheckShape(li, "cachegen decode"); err != nil {
		return nil, err
	}
	fail := func(off int, format string, args ...any) error {
		return fmt.Errorf("cachegen decode layer %d: offset %d: %s: %w", li.Index, off, fmt.Sprintf(format, args...), ErrMalformed)
	}
	if len(enc) < cachegenHeader {
		return nil, fail(len(enc), "header needs %d bytes", cachegenHeader)
	}
	if enc[0] != cachegenVersion {
		return nil, fail(0, "version %d, want %d", enc[0], cachegenVersion)
	}
	if enc[1] < 1 || enc[1] > CacheGenMaxLevel {
		return nil, fail(1, "level %d, want 1..%d", enc[1], CacheGenMaxLevel)
	}
	group := int(enc[2])
	if group < 1 {
		return nil, fail(2, "group size 0")
	}
	for i, b := range enc[3:cachegenHeader] {
		if b < cachegenMinBits || b > cachegenMaxBits {
			return nil, fail(3+i, "bit width %d, want %d..%d", b, cachegenMinBits, cachegenMaxBits)
		}
	}
	ch := li.Shape.KVHeads * li.Shape.HeadDim
	n := li.Tokens * ch
	groups := (li.Tokens + group - 1) / group
	// the scales alone take 8 bytes a channel; the output size itself is
	// the blob header's (li), which the blob reader bounds
	if minEnc := cachegenHeader + 8*ch; len(enc) < minEnc {
		return nil, fail(len(enc), "%d bytes cannot hold the scales of %d channels", len(enc), ch)
	}
	out := li.Bytes()
	if cap(dst) < out {
		dst = make([]byte, out)
	}
	dst = dst[:out]
	var sc *cachegenScratch
	if c != nil && c.scratch != nil {
		sc = c.scratch.Get().(*cachegenScratch)
		defer c.scratch.Put(sc)
	} else {
		sc = &cachegenScratch{}
	}
	sc.grow(n)
	syms, vals := sc.syms[:n], sc.vals[:n]
	aq := cgQMax(enc[3])
	off := cachegenHeader
	rowBytes := ch * li.Shape.DType.Size()
	aScale := make([]float32, ch)
	dScale := make([]float32, ch)
	for h, dsc := range []float32{li.Scales.K, li.Scales.V} {
		dq := cgQMax(enc[4+h])
		for i, s := range [2][]float32{aScale, dScale} {
			if len(enc)-off < 2*ch {
				return nil, fail(off, "%s scales need %d bytes", kvName(h), 2*ch)
			}
			for c := range s {
				v := BF16ToFloat32(binary.LittleEndian.Uint16(enc[off:]))
				if !(v >= 0 && v <= math.MaxFloat32) {
					return nil, fail(off, "%s %s scale of channel %d is %v", kvName(h), [2]string{"anchor", "delta"}[i], c, v)
				}
				s[c] = v
				off += 2
			}
		}
		var err error
		if off, err = cgReadStream(syms[:groups*ch], enc, off, sc, 2*aq); err != nil {
			return nil, fmt.Errorf("cachegen decode layer %d %s anchors: %w", li.Index, kvName(h), err)
		}
		if off, err = cgReadStream(syms[groups*ch:], enc, off, sc, 2*dq); err != nil {
			return nil, fmt.Errorf("cachegen decode layer %d %s deltas: %w", li.Index, kvName(h), err)
		}
		anchors, deltas := syms[:groups*ch], syms[groups*ch:]
		k := 0
		for t := range li.Tokens {
			gi := t / group
			arow := anchors[gi*ch : gi*ch+ch]
			row := vals[t*ch : t*ch+ch]
			if t%group == 0 {
				for c, z := range arow {
					row[c] = float32(unzigzag(z)) * aScale[c]
				}
			} else {
				for c, z := range arow {
					row[c] = float32(unzigzag(z))*aScale[c] + float32(unzigzag(deltas[k+c]))*dScale[c]
				}
				k += ch
			}
		}
		if err := EncodeFloat32(dst[h*li.Tokens*rowBytes:(h+1)*li.Tokens*rowBytes], li.Shape.DType, vals, dsc); err != nil {
			return nil, fmt.Errorf("cachegen decode layer %d: %w", li.Index, err)
		}
	}
	if off != len(enc) {
		return nil, fail(off, "%d trailing bytes", len(enc)-off)
	}
	return dst, nil
}

var errCGBlock = errors.New("bad block")

// cgReadStream decodes len(out) symbols, each at most maxSym, from enc at
// off and returns the offset after them.
func cgReadStream(out []byte, enc []byte, off int, sc *cachegenScratch, maxSym int32) (int, error) {
	for start := 0; start < len(out); start += cachegenBlockSyms {
		blk := out[start:min(start+cachegenBlockSyms, len(out))]
		if off >= len(enc) {
			return off, fmt.Errorf("offset %d: block at symbol %d missing: %w", off, start, ErrMalformed)
		}
		mode := enc[off]
		l, w := binary.Uvarint(enc[off+1:])
		if w <= 0 || l > uint64(len(enc)-off-1-w) {
			return off, fmt.Errorf("offset %d: block length does not fit the %d bytes left: %w", off+1, len(enc)-off-1, ErrMalformed)
		}
		data := enc[off+1+w : off+1+w+int(l)]
		var err error
		switch mode {
		case cgModeRaw:
			if len(data) != len(blk) {
				err = fmt.Errorf("raw block of %d bytes, want %d: %w", len(data), len(blk), errCGBlock)
			} else {
				copy(blk, data)
			}
		case cgModeRun:
			if len(data) != 1 {
				err = fmt.Errorf("run block of %d bytes, want 1: %w", len(data), errCGBlock)
			} else {
				for i := range blk {
					blk[i] = data[0]
				}
			}
		case cgModeHuff0:
			sc.huff.MaxDecodedSize = len(blk)
			var s *huff0.Scratch
			var rem []byte
			if s, rem, err = huff0.ReadTable(data, &sc.huff); err == nil {
				var got []byte
				got, err = s.Decoder().Decompress1X(blk[:0:len(blk)], rem)
				if err == nil && len(got) != len(blk) {
					err = fmt.Errorf("huff0 block holds %d symbols, want %d: %w", len(got), len(blk), errCGBlock)
				}
			}
		case cgModeFSE:
			sc.fse.DecompressLimit = len(blk)
			var got []byte
			if got, err = fse.Decompress(data, &sc.fse); err == nil {
				if len(got) != len(blk) {
					err = fmt.Errorf("fse block holds %d symbols, want %d: %w", len(got), len(blk), errCGBlock)
				} else {
					copy(blk, got)
				}
			}
		default:
			err = fmt.Errorf("mode %d: %w", mode, errCGBlock)
		}
		if err != nil {
			return off, fmt.Errorf("offset %d: block at symbol %d: %w: %w", off, start, ErrMalformed, err)
		}
		for i, z := range blk {
			if int32(z) > maxSym {
				return off, fmt.Errorf("offset %d: symbol %d is %d, more than the bit width allows (%d): %w", off, start+i, z, maxSym, ErrMalformed)
			}
		}
		off += 1 + w + int(l)
	}
	return off, nil
}
