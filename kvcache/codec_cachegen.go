package kvcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

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
//     github.com/klauspost/compress's Huff0 (stored raw or as a run when
//     it does not help). CacheGen uses arithmetic coding with per-channel
//     contexts; order-0 Huffman per stream gives most of that gain and
//     decodes over a billion symbols a second on one core. FSE, which
//     version 1 also used, is a few percent smaller at the lowest bit
//     widths but decodes 3–4× slower; packing low-width symbols in pairs
//     (below) recovers most of that difference.
//
// Levels 1 (best quality) to CacheGenMaxLevel (smallest) pick the group
// size and bit widths; the level is stored in each layer's encoding, so
// one registered CacheGen decodes every level.
//
// Layer encoding, version 2 (this comment is its specification): u8
// version (2), u8 level, u8 group size, u8 anchor bits, u8 K delta bits,
// u8 V delta bits; then for K and for V: channels × bf16 anchor scales,
// channels × bf16 delta scales; then the anchor symbols (K's groups ×
// channels, then V's) and the delta symbols (K's (tokens − groups) ×
// channels, then V's), token-major. A symbol is the zigzag code of a
// quantized value q, at most 2·(2^(bits−1)−1); K's (V's) delta symbols
// are packed two to a byte, the first in the low nibble (an odd last one
// alone, high nibble 0), when K's (V's) delta bits are at most 4: Huff0
// then codes symbol pairs, which halves the symbols to decode and lets
// a code spend less than one bit on a symbol. K's and V's anchor bytes
// form one stream when together they are at most cachegenBlockSyms
// bytes, else each is its own stream; likewise the delta bytes. So a
// small layer builds two Huffman tables, not one per K/V stream or block.
// A stream is blocks of at most cachegenBlockSyms bytes, each u8 mode
// (0 raw, 1 run, 2 Huff0 single stream, 3 Huff0 four streams), uvarint
// length, bytes. A channel decodes as float32 products and sums, each rounded on its own
// (no fused multiply-add): an anchor token to a = q·s_anchor, every other
// token of the group to a + q·s_delta; then to the layer's dtype.
//
// Version 1 (per-K/V streams of 64 Ki-symbol blocks, FSE or Huff0 per
// block) was never persisted and is no longer read.
type CacheGen struct {
	level   int
	scratch *sync.Pool // *cachegenScratch: buffers and Huff0 tables reused across calls
}

var _ Codec = (*CacheGen)(nil)

// CacheGenMaxLevel is the most aggressive level.
const CacheGenMaxLevel = 4

const (
	cachegenVersion = 2
	cachegenHeader  = 6
	// cachegenBlockSyms bounds a block (Huff0 takes up to 256 Ki − 1):
	// large enough that a table is built per stream of a layer, not per
	// small block.
	cachegenBlockSyms = 1 << 17
	// cachegen4XMin is the smallest block coded as four Huff0 streams,
	// which decode about twice as fast as one but cost a 6-byte jump
	// table.
	cachegen4XMin   = 1 << 10
	cachegenMinBits = 2
	cachegenMaxBits = 8
)

const (
	cgModeRaw = iota
	cgModeRun
	cgModeHuff1X
	cgModeHuff4X
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

// cachegenScratch is what one EncodeLayer or DecodeLayer call works in;
// the codec's pool keeps them, so steady-state calls allocate nothing of
// the layer's size.
type cachegenScratch struct {
	huff   huff0.Scratch
	syms   []byte    // anchors plane then deltas plane (K's then V's in each)
	packed []byte    // the deltas plane as coded when some of it is packed
	vals   []float32 // the encoder's half of the layer, the decoder's rows of a group
	// per channel: scales (anchor, delta), zeros, magnitudes
	aScale, dScale, zeros []float32
	magA, magD, magAll    []uint32
}

func (sc *cachegenScratch) grow(n, ch int) {
	if cap(sc.syms) < 2*n {
		sc.syms = make([]byte, 2*n)
		sc.packed = make([]byte, 2*n)
	}
	if cap(sc.aScale) < ch {
		sc.aScale, sc.dScale = make([]float32, ch), make([]float32, ch)
		sc.zeros = make([]float32, ch)
		sc.magA, sc.magD, sc.magAll = make([]uint32, ch), make([]uint32, ch), make([]uint32, ch)
	}
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

// cgQuantRow quantizes vals by per-channel scales to zigzag symbols:
// q = x/s clamped to ±qmax and rounded half away from zero (0 where s is
// 0). With dec, it also stores the decoded values q·s there.
func cgQuantRow(syms []byte, vals, scales []float32, qmax int32, dec []float32) {
	lim := float32(qmax)
	i := cgQuantKernel(syms, vals, scales, lim, dec)
	syms, scales = syms[:len(vals)], scales[:len(vals)]
	for ; i < len(vals); i++ {
		v := vals[i]
		var q int32
		if s := scales[i]; s != 0 {
			q = int32(math.Round(float64(min(max(v/s, -lim), lim))))
		}
		syms[i] = byte(uint32(q<<1) ^ uint32(q>>31))
		if dec != nil {
			dec[i] = float32(q) * scales[i]
		}
	}
}

// cgDequantRows sets dst[r·ch+c] = base[c] + q·scales[c] for the zigzag
// symbols q of len(dst)/ch rows of ch = len(base) channels, each operation
// rounded on its own, and reports whether a symbol exceeds maxSym.
func cgDequantRows(dst []float32, syms []byte, base, scales []float32, maxSym byte) bool {
	i, bad := cgDequantKernel(dst, syms, base, scales, maxSym)
	ch := len(base)
	syms, scales = syms[:len(dst)], scales[:ch]
	for ; i < len(dst); i += ch {
		row, srow := dst[i:i+ch], syms[i:i+ch]
		for c, z := range srow {
			bad = bad || z > maxSym
			q := int32(z>>1) ^ -int32(z&1)
			x := float32(q) * scales[c]
			row[c] = base[c] + x
		}
	}
	return bad
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
	sc.grow(n, ch)
	if cap(sc.vals) < n {
		sc.vals = make([]float32, n)
	}
	vals := sc.vals[:n]
	half := li.Shape.LayerBytes(li.Tokens) / 2
	groups := (li.Tokens + p.group - 1) / p.group
	na, nd := groups*ch, n-groups*ch
	for h, dsc := range codecScales(li) {
		decodeF32s(vals, li.Shape.DType, kv[h*half:(h+1)*half], dsc)
		anchors := sc.syms[h*na : (h+1)*na]
		deltas := sc.syms[2*na+h*nd : 2*na+(h+1)*nd]
		var err error
		if dst, err = cgEncodeHalf(dst, sc, vals, anchors, deltas, li.Tokens, ch, p.group, p.anchorBits, bits[h]); err != nil {
			return dst[:start], fmt.Errorf("cachegen encode layer %d %s: %w", li.Index, kvName(h), err)
		}
	}
	dst = cgAppendPlane(dst, sc, sc.syms[:2*na], na)
	coded, kLen := cgPackDeltas(sc, sc.syms[2*na:2*n], bits)
	dst = cgAppendPlane(dst, sc, coded, kLen)
	return dst, nil
}

// cgPacked says whether deltas of bit width bits are coded two to a byte.
func cgPacked(bits uint8) bool { return bits <= 4 }

// cgPackedLen is the coded length of n delta symbols.
func cgPackedLen(n int, bits uint8) int {
	if cgPacked(bits) {
		return (n + 1) / 2
	}
	return n
}

// cgPackDeltas returns the deltas plane (K's then V's, each half of it) as
// coded, and the length of K's part.
func cgPackDeltas(sc *cachegenScratch, plane []byte, bits [2]uint8) ([]byte, int) {
	if !cgPacked(bits[0]) && !cgPacked(bits[1]) {
		return plane, len(plane) / 2
	}
	nd := len(plane) / 2
	out := sc.packed[:0]
	for h := range 2 {
		part := plane[h*nd : (h+1)*nd]
		if !cgPacked(bits[h]) {
			out = append(out, part...)
			continue
		}
		for i := 0; i+1 < len(part); i += 2 {
			out = append(out, part[i]|part[i+1]<<4)
		}
		if len(part)%2 == 1 {
			out = append(out, part[len(part)-1])
		}
	}
	return out, cgPackedLen(nd, bits[0])
}

// cgUnpack spreads packed symbol pairs over syms (len(syms) symbols) and
// reports whether an odd last byte's high nibble is set.
func cgUnpack(syms, packed []byte) bool {
	i := cgUnpackKernel(syms, packed)
	packed = packed[:(len(syms)+1)/2]
	for ; i+1 < len(syms); i += 2 {
		b := packed[i/2]
		syms[i], syms[i+1] = b&15, b>>4
	}
	if len(syms)%2 == 1 {
		b := packed[len(packed)-1]
		syms[len(syms)-1] = b
		return b > 15
	}
	return false
}

// cgEncodeHalf quantizes one of K or V (vals, which it overwrites),
// appends its scales and leaves its symbols in anchors and deltas.
func cgEncodeHalf(dst []byte, sc *cachegenScratch, vals []float32, anchors, deltas []byte, tokens, ch, group int, aBits, dBits uint8) ([]byte, error) {
	aq, dq := cgQMax(aBits), cgQMax(dBits)
	magA, magD, magAll := sc.magA[:ch], sc.magD[:ch], sc.magAll[:ch]
	clear(magA)
	clear(magD)
	clear(magAll)
	for t := range tokens {
		row := vals[t*ch : (t+1)*ch]
		if t%group == 0 {
			absMaxBits(magA, row)
		} else {
			absMaxBits(magAll, row)
		}
	}
	for c := range ch {
		if max(magA[c], magAll[c]) > 0x7f7fffff {
			for i, v := range vals {
				if a := float32(math.Abs(float64(v))); !(a <= math.MaxFloat32) {
					return dst, fmt.Errorf("row %d channel %d is %v: %w", i/ch, i%ch, v, ErrUnsupported)
				}
			}
		}
	}
	aScale, dScale := sc.aScale[:ch], sc.dScale[:ch]
	for c, m := range magA {
		b, err := cgScale(math.Float32frombits(m), aq)
		if err != nil {
			return dst, err
		}
		dst = binary.LittleEndian.AppendUint16(dst, b)
		aScale[c] = BF16ToFloat32(b)
	}
	// anchors; vals then holds the decoded anchors the deltas are taken
	// against
	groups := (tokens + group - 1) / group
	for gi := range groups {
		row := vals[gi*group*ch : gi*group*ch+ch]
		cgQuantRow(anchors[gi*ch:(gi+1)*ch], row, aScale, aq, row)
	}
	for t := range tokens {
		if t%group == 0 {
			continue
		}
		arow := vals[(t/group)*group*ch:][:ch]
		row := vals[t*ch : (t+1)*ch]
		for c, a := range arow {
			row[c] -= a
		}
		absMaxBits(magD, row)
	}
	for c, m := range magD {
		b, err := cgScale(math.Float32frombits(m), dq)
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
		cgQuantRow(deltas[k:k+ch], vals[t*ch:(t+1)*ch], dScale, dq, nil)
		k += ch
	}
	return dst, nil
}

// cgStreams cuts a plane (K's bytes, kLen of them, then V's) into the
// streams the format codes: one when it fits a block, else K's and V's.
func cgStreams(plane []byte, kLen int) [2][]byte {
	if len(plane) <= cachegenBlockSyms {
		return [2][]byte{plane, nil}
	}
	return [2][]byte{plane[:kLen], plane[kLen:]}
}

func cgAppendPlane(dst []byte, sc *cachegenScratch, plane []byte, kLen int) []byte {
	for _, st := range cgStreams(plane, kLen) {
		for off := 0; off < len(st); off += cachegenBlockSyms {
			dst = cgAppendBlock(dst, sc, st[off:min(off+cachegenBlockSyms, len(st))])
		}
	}
	return dst
}

func cgAppendBlock(dst []byte, sc *cachegenScratch, blk []byte) []byte {
	mode, best := byte(cgModeRaw), blk
	sc.huff.Reuse = huff0.ReusePolicyNone
	var out []byte
	var err error
	if len(blk) >= cachegen4XMin {
		mode = cgModeHuff4X
		out, _, err = huff0.Compress4X(blk, &sc.huff)
	} else {
		mode = cgModeHuff1X
		out, _, err = huff0.Compress1X(blk, &sc.huff)
	}
	switch {
	case err == nil && len(out) < len(blk):
		best = out
	case errors.Is(err, huff0.ErrUseRLE):
		mode, best = cgModeRun, blk[:1]
	default: // incompressible (or too small to tell)
		mode = cgModeRaw
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
	na, nd := groups*ch, n-groups*ch
	// the scales alone take 8 bytes a channel; the output size itself is
	// the blob header's (li), which the blob reader bounds
	if minEnc := cachegenHeader + 8*ch; len(enc) < minEnc {
		return nil, fail(len(enc), "%d bytes cannot hold the scales of %d channels", len(enc), ch)
	}
	var sc *cachegenScratch
	if c != nil && c.scratch != nil {
		sc = c.scratch.Get().(*cachegenScratch)
		defer c.scratch.Put(sc)
	} else {
		sc = &cachegenScratch{}
	}
	sc.grow(n, ch)
	if g := min(group, li.Tokens) * ch; cap(sc.vals) < g {
		sc.vals = make([]float32, g)
	}
	// scales: checked here, converted per half below
	off := cachegenHeader
	for h := range 2 {
		for i := range 2 {
			for c := range ch {
				if v := BF16ToFloat32(binary.LittleEndian.Uint16(enc[off:])); !(v >= 0 && v <= math.MaxFloat32) {
					return nil, fail(off, "%s %s scale of channel %d is %v", kvName(h), [2]string{"anchor", "delta"}[i], c, v)
				}
				off += 2
			}
		}
	}
	var err error
	syms := sc.syms[:2*n]
	if off, err = cgReadPlane(syms[:2*na], na, enc, off, sc); err != nil {
		return nil, fmt.Errorf("cachegen decode layer %d anchors: %w", li.Index, err)
	}
	bits := [2]uint8{enc[4], enc[5]}
	kLen, vLen := cgPackedLen(nd, bits[0]), cgPackedLen(nd, bits[1])
	coded := syms[2*na:]
	if kLen+vLen != 2*nd {
		coded = sc.packed[:kLen+vLen]
	}
	if off, err = cgReadPlane(coded, kLen, enc, off, sc); err != nil {
		return nil, fmt.Errorf("cachegen decode layer %d deltas: %w", li.Index, err)
	}
	if off != len(enc) {
		return nil, fail(off, "%d trailing bytes", len(enc)-off)
	}
	if kLen+vLen != 2*nd {
		for h := range 2 {
			part := coded[h*kLen:][:[2]int{kLen, vLen}[h]]
			to := syms[2*na+h*nd : 2*na+(h+1)*nd]
			if !cgPacked(bits[h]) {
				copy(to, part)
			} else if cgUnpack(to, part) {
				return nil, fmt.Errorf("cachegen decode layer %d: %s deltas: odd last byte 0x%02x has a high nibble: %w", li.Index, kvName(h), part[len(part)-1], ErrMalformed)
			}
		}
	}
	out := li.Bytes()
	if cap(dst) < out {
		dst = make([]byte, out)
	}
	dst = dst[:out]
	dt := li.Shape.DType
	rowBytes := ch * dt.Size()
	aMax, aScale, dScale := byte(2*cgQMax(enc[3])), sc.aScale[:ch], sc.dScale[:ch]
	zeros := sc.zeros[:ch]
	clear(zeros)
	// a group's rows are dequantized into rows, then converted at once
	rows := sc.vals[:min(group, li.Tokens)*ch]
	for h, dsc := range codecScales(li) {
		dscs := [1]float32{dsc}
		dMax := byte(2 * cgQMax(enc[4+h]))
		decodeF32s(aScale, BF16, enc[cachegenHeader+4*ch*h:][:2*ch], 0)
		decodeF32s(dScale, BF16, enc[cachegenHeader+4*ch*h+2*ch:][:2*ch], 0)
		anchors, deltas := syms[h*na:(h+1)*na], syms[2*na+h*nd:2*na+(h+1)*nd]
		half := dst[h*li.Tokens*rowBytes : (h+1)*li.Tokens*rowBytes]
		k := 0
		for gi := range groups {
			t0 := gi * group
			m := min(group, li.Tokens-t0) // tokens in this group
			arow := rows[:ch]
			if cgDequantRows(arow, anchors[gi*ch:(gi+1)*ch], zeros, aScale, aMax) {
				return nil, cgSymbolError(li, h, "anchor", anchors, aMax)
			}
			if cgDequantRows(rows[ch:m*ch], deltas[k:k+(m-1)*ch], arow, dScale, dMax) {
				return nil, cgSymbolError(li, h, "delta", deltas, dMax)
			}
			k += (m - 1) * ch
			encodeF32s(half[t0*rowBytes:(t0+m)*rowBytes], dt, rows[:m*ch], dscs[:])
		}
	}
	return dst, nil
}

// cgSymbolError names the first symbol of a stream that exceeds its bit
// width.
func cgSymbolError(li LayerInfo, h int, what string, syms []byte, maxSym byte) error {
	i := slices.IndexFunc(syms, func(z byte) bool { return z > maxSym })
	return fmt.Errorf("cachegen decode layer %d: %s %s symbol %d is %d, more than the bit width allows (%d): %w", li.Index, kvName(h), what, i, syms[i], maxSym, ErrMalformed)
}

var errCGBlock = errors.New("bad block")

// cgReadPlane decodes len(plane) bytes, K's kLen then V's, coded as
// cgStreams cuts them, from enc at off and returns the offset after them.
func cgReadPlane(plane []byte, kLen int, enc []byte, off int, sc *cachegenScratch) (int, error) {
	done := 0
	for _, st := range cgStreams(plane, kLen) {
		for start := 0; start < len(st); start += cachegenBlockSyms {
			blk := st[start:min(start+cachegenBlockSyms, len(st))]
			var err error
			if off, err = cgReadBlock(blk, enc, off, sc); err != nil {
				return off, fmt.Errorf("block at symbol %d: %w", done+start, err)
			}
		}
		done += len(st)
	}
	return off, nil
}

// cgReadBlock decodes exactly len(blk) symbols from the block at off.
func cgReadBlock(blk []byte, enc []byte, off int, sc *cachegenScratch) (int, error) {
	if off >= len(enc) {
		return off, fmt.Errorf("offset %d: block missing: %w", off, ErrMalformed)
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
	case cgModeHuff1X, cgModeHuff4X:
		sc.huff.MaxDecodedSize = len(blk)
		var s *huff0.Scratch
		var rem []byte
		if s, rem, err = huff0.ReadTable(data, &sc.huff); err == nil {
			var got []byte
			if mode == cgModeHuff4X {
				got, err = s.Decoder().Decompress4X(blk[:0:len(blk)], rem)
			} else {
				got, err = s.Decoder().Decompress1X(blk[:0:len(blk)], rem)
			}
			if err == nil && len(got) != len(blk) {
				err = fmt.Errorf("huff0 block holds %d symbols, want %d: %w", len(got), len(blk), errCGBlock)
			}
		}
	default:
		err = fmt.Errorf("mode %d: %w", mode, errCGBlock)
	}
	if err != nil {
		return off, fmt.Errorf("offset %d: %w: %w", off, ErrMalformed, err)
	}
	return off + 1 + w + int(l), nil
}
