package kvcache

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// FP8 is the fp8 codec (CodecFP8): every channel (one KV head's one
// element, across the chunk's tokens) of a layer's K and of its V gets its
// own float32 scale, absmax/448, and the values are stored as OCP FP8 E4M3
// of value/scale. Per-channel scales matter because KV channels differ in
// range by orders of magnitude (a few outlier channels would crush a single
// per-tensor scale). It is lossy: about 2⁻⁴ relative error per value.
//
// Layer encoding (this comment is its specification): u8 version (1);
// then for K and for V:
// channels × float32 LE scale, tokens × channels FP8 bytes.
type FP8 struct{}

var _ Codec = FP8{}

const fp8CodecVersion = 1

// ID implements Codec.
func (FP8) ID() CodecID { return CodecFP8 }

// Name implements Codec.
func (FP8) Name() string { return "fp8" }

// fp8Size is the encoded size of a layer.
func fp8Size(tokens, ch int) int { return 1 + 2*(4*ch+tokens*ch) }

// fp8Tile is how many values EncodeLayer and DecodeLayer convert at a
// time: a layer's rows are done fp8Tile/channels at once, or, when a row
// is longer, in column tiles of fp8Tile channels. The tile and the
// channels' scales live in stack arrays (12 KiB together), so neither
// call allocates.
const fp8Tile = 1024

// fp8Tiling is the column width and rows per step for ch channels.
func fp8Tiling(ch int) (w, rows int) {
	w = min(ch, fp8Tile)
	if w < ch {
		return w, 1
	}
	return w, fp8Tile / ch
}

// EncodeLayer implements Codec. It makes two passes over each of K and V
// per column tile, converting rows to float32 in the stack: one for the
// channels' magnitudes, one to quantize.
func (FP8) EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error) {
	if err := lossyCheck(li, kv, "fp8 encode"); err != nil {
		return dst, err
	}
	ch := li.Shape.KVHeads * li.Shape.HeadDim
	dt := li.Shape.DType
	es := dt.Size()
	rowBytes := ch * es
	half := li.Tokens * rowBytes
	start := len(dst)
	dst = slices.Grow(dst, fp8Size(li.Tokens, ch))[:start+fp8Size(li.Tokens, ch)]
	out := dst[start:]
	out[0] = fp8CodecVersion
	var (
		tile   [fp8Tile]float32
		scales [fp8Tile]float32
		mags   [fp8Tile]uint32
	)
	w, rows := fp8Tiling(ch)
	for h, dsc := range codecScales(li) {
		src := kv[h*half : (h+1)*half]
		part := out[1+h*(4*ch+li.Tokens*ch) : 1+(h+1)*(4*ch+li.Tokens*ch)]
		codes := part[4*ch:]
		for c0 := 0; c0 < ch; c0 += w {
			m := mags[:w]
			clear(m)
			for t := 0; t < li.Tokens; t += rows {
				r := min(rows, li.Tokens-t)
				vals := tile[:r*w]
				o := t*rowBytes + c0*es
				decodeF32s(vals, dt, src[o:o+r*w*es], dsc)
				for i := 0; i < len(vals); i += w {
					absMaxBits(m, vals[i:i+w])
				}
			}
			for c, b := range m {
				if b > 0x7f7fffff {
					return dst[:start], fp8NonFinite(li, h, src, ch, dsc)
				}
				s := math.Float32frombits(b) / FP8E4M3Max
				scales[c] = s
				binary.LittleEndian.PutUint32(part[4*(c0+c):], math.Float32bits(s))
			}
			for t := 0; t < li.Tokens; t += rows {
				r := min(rows, li.Tokens-t)
				vals := tile[:r*w]
				o := t*rowBytes + c0*es
				decodeF32s(vals, dt, src[o:o+r*w*es], dsc)
				// r rows of w = ch channels, or one row of w of them
				encodeF32s(codes[t*ch+c0:t*ch+c0+r*w], FP8E4M3, vals, scales[:w])
			}
		}
	}
	return dst, nil
}

// fp8NonFinite names the first value of one of K or V that is Inf or NaN.
func fp8NonFinite(li LayerInfo, h int, src []byte, ch int, dsc float32) error {
	vals := make([]float32, li.Tokens*ch)
	decodeF32s(vals, li.Shape.DType, src, dsc)
	for i, v := range vals {
		if a := float32(math.Abs(float64(v))); !(a <= math.MaxFloat32) {
			return fmt.Errorf("fp8 encode layer %d: %s row %d channel %d is %v: %w", li.Index, kvName(h), i/ch, i%ch, v, ErrUnsupported)
		}
	}
	return fmt.Errorf("fp8 encode layer %d: %s holds a value that is not finite: %w", li.Index, kvName(h), ErrUnsupported)
}

// DecodeLayer implements Codec. Per column tile it reads the channels'
// scales into the stack, then turns rows of codes into float32 (one
// table-exact conversion and one multiply per value) and those into the
// layer's dtype.
func (FP8) DecodeLayer(dst []byte, li LayerInfo, enc []byte) ([]byte, error) {
	if err := lossyCheckShape(li, "fp8 decode"); err != nil {
		return nil, err
	}
	ch := li.Shape.KVHeads * li.Shape.HeadDim
	if want := fp8Size(li.Tokens, ch); len(enc) != want {
		return nil, fmt.Errorf("fp8 decode layer %d: %d bytes, want %d for %d tokens × %d channels: %w", li.Index, len(enc), want, li.Tokens, ch, ErrMalformed)
	}
	if enc[0] != fp8CodecVersion {
		return nil, fmt.Errorf("fp8 decode layer %d: version %d at offset 0, want %d: %w", li.Index, enc[0], fp8CodecVersion, ErrMalformed)
	}
	n := li.Bytes()
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	dt := li.Shape.DType
	es := dt.Size()
	rowBytes := ch * es
	var (
		tile   [fp8Tile]float32
		scales [fp8Tile]float32
	)
	w, rows := fp8Tiling(ch)
	for h, dsc := range codecScales(li) {
		dscs := [1]float32{dsc}
		base := 1 + h*(4*ch+li.Tokens*ch)
		codes := enc[base+4*ch : base+4*ch+li.Tokens*ch]
		out := dst[h*li.Tokens*rowBytes : (h+1)*li.Tokens*rowBytes]
		for c0 := 0; c0 < ch; c0 += w {
			for c := range w {
				off := base + 4*(c0+c)
				s := math.Float32frombits(binary.LittleEndian.Uint32(enc[off:]))
				if !(s >= 0 && s <= math.MaxFloat32) {
					return nil, fmt.Errorf("fp8 decode layer %d: %s channel %d scale %v at offset %d, want a finite value >= 0: %w", li.Index, kvName(h), c0+c, s, off, ErrMalformed)
				}
				scales[c] = s
			}
			for t := 0; t < li.Tokens; t += rows {
				r := min(rows, li.Tokens-t)
				vals := tile[:r*w]
				cs := codes[t*ch+c0 : t*ch+c0+r*w]
				o := t*rowBytes + c0*es
				if fp8DecodeRows(out[o:o+r*w*es], dt, vals, cs, scales[:w], dscs[:]) {
					return nil, fp8NaNError(li, h, codes, base+4*ch, ch)
				}
			}
		}
	}
	return dst, nil
}

// fp8NaNError names the first NaN code of one of K or V.
func fp8NaNError(li LayerInfo, h int, codes []byte, at, ch int) error {
	i := slices.IndexFunc(codes, func(b byte) bool { return b&0x7F == 0x7F })
	return fmt.Errorf("fp8 decode layer %d: %s row %d channel %d holds NaN (0x%02x) at offset %d: %w", li.Index, kvName(h), i/ch, i%ch, codes[i], at+i, ErrMalformed)
}

// fp8DecodeRows converts codes times the per-channel scales into the
// layer's dtype dt (dscs: its FP8 scale) in out, through vals, and reports
// whether a code is NaN. Into f16 and bf16 it runs in one pass where the
// CPU allows.
func fp8DecodeRows(out []byte, dt DType, vals []float32, codes []byte, scales, dscs []float32) bool {
	i, nan := fp8ToHalfKernel(out, dt, codes, scales)
	if i == len(codes) {
		return nan
	}
	// the kernel did all or nothing, or a prefix under one scale
	es := dt.Size()
	vals = vals[i:len(codes)]
	if fp8ScaleRows(vals, codes[i:], scales) {
		return true
	}
	encodeF32s(out[i*es:], dt, vals, dscs)
	return nan
}

// fp8ScaleRows sets dst[i] = value(codes[i]) × scales[i%len(scales)]
// (len(scales) divides len(dst)) and reports whether a code is NaN.
func fp8ScaleRows(dst []float32, codes []byte, scales []float32) bool {
	i, nan := fp8ToF32Kernel(dst, codes, scales)
	codes = codes[:len(dst)]
	for c := i % len(scales); i < len(dst); i++ {
		b := codes[i]
		nan = nan || b&0x7f == 0x7f
		dst[i] = fp8Table[b] * scales[c]
		if c++; c == len(scales) {
			c = 0
		}
	}
	return nan
}

func kvName(h int) string {
	if h == 0 {
		return "K"
	}
	return "V"
}

// codecScales are the K and V scales a layer's rows are converted with:
// an FP8 layer's zero scale means 1, as in DecodeFloat32.
func codecScales(li LayerInfo) [2]float32 {
	out := [2]float32{li.Scales.K, li.Scales.V}
	for i, v := range out {
		if li.Shape.DType == FP8E4M3 && v == 0 {
			out[i] = 1
		}
	}
	return out
}

// lossyCheckShape validates what a codec needs of li before it trusts sizes
// derived from it.
func lossyCheckShape(li LayerInfo, op string) error {
	s := li.Shape
	if s.Layers < 1 || s.KVHeads < 1 || s.HeadDim < 1 || !s.DType.Valid() || li.Tokens < 0 || li.Index < 0 || li.Index >= s.Layers {
		return fmt.Errorf("%s layer %d: shape %s with %d tokens: %w", op, li.Index, s, li.Tokens, ErrShape)
	}
	return nil
}

// lossyCheck validates li and the size of a layer's decoded payload.
func lossyCheck(li LayerInfo, kv []byte, op string) error {
	if err := lossyCheckShape(li, op); err != nil {
		return err
	}
	if len(kv) != li.Bytes() {
		return fmt.Errorf("%s layer %d: %d bytes, want %d: %w", op, li.Index, len(kv), li.Bytes(), ErrShape)
	}
	return nil
}
