package kvcache

import (
	"encoding/binary"
	"fmt"
	"math"
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

// fp8Decode maps every FP8 byte to its float32 value.
var fp8Decode = func() (t [256]float32) {
	for i := range t {
		t[i] = FP8E4M3ToFloat32(uint8(i))
	}
	return t
}()

// ID implements Codec.
func (FP8) ID() CodecID { return CodecFP8 }

// Name implements Codec.
func (FP8) Name() string { return "fp8" }

// fp8Size is the encoded size of a layer.
func fp8Size(tokens, ch int) int { return 1 + 2*(4*ch+tokens*ch) }

// EncodeLayer implements Codec.
func (FP8) EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error) {
	if err := lossyCheck(li, kv, "fp8 encode"); err != nil {
		return dst, err
	}
	ch := li.Shape.KVHeads * li.Shape.HeadDim
	half := li.Shape.LayerBytes(li.Tokens) / 2
	vals := make([]float32, li.Tokens*ch)
	scales := make([]float32, ch)
	start := len(dst)
	dst = append(dst, fp8CodecVersion)
	for h, sc := range []float32{li.Scales.K, li.Scales.V} {
		if err := DecodeFloat32(vals, li.Shape.DType, kv[h*half:(h+1)*half], sc); err != nil {
			return dst[:start], fmt.Errorf("fp8 encode layer %d: %w", li.Index, err)
		}
		clear(scales)
		for i, v := range vals {
			a := float32(math.Abs(float64(v)))
			if !(a <= math.MaxFloat32) {
				return dst[:start], fmt.Errorf("fp8 encode layer %d: %s row %d channel %d is %v: %w", li.Index, kvName(h), i/ch, i%ch, v, ErrUnsupported)
			}
			scales[i%ch] = max(scales[i%ch], a)
		}
		for c, m := range scales {
			scales[c] = m / FP8E4M3Max
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(scales[c]))
		}
		for i, v := range vals {
			var b uint8
			if s := scales[i%ch]; s > 0 {
				b = FP8E4M3FromFloat32(v / s)
			}
			dst = append(dst, b)
		}
	}
	return dst, nil
}

// DecodeLayer implements Codec.
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
	es := li.Shape.DType.Size()
	rowBytes := ch * es
	row := make([]float32, ch)
	scales := make([]float32, ch)
	off := 1
	for h, dsc := range []float32{li.Scales.K, li.Scales.V} {
		for c := range scales {
			s := math.Float32frombits(binary.LittleEndian.Uint32(enc[off:]))
			if !(s >= 0 && s <= math.MaxFloat32) {
				return nil, fmt.Errorf("fp8 decode layer %d: %s channel %d scale %v at offset %d, want a finite value >= 0: %w", li.Index, kvName(h), c, s, off, ErrMalformed)
			}
			scales[c] = s
			off += 4
		}
		out := dst[h*li.Tokens*rowBytes:]
		for t := range li.Tokens {
			codes := enc[off : off+ch]
			for c, b := range codes {
				if b&0x7F == 0x7F {
					return nil, fmt.Errorf("fp8 decode layer %d: %s row %d channel %d holds NaN (0x%02x) at offset %d: %w", li.Index, kvName(h), t, c, b, off+c, ErrMalformed)
				}
				row[c] = fp8Decode[b] * scales[c]
			}
			if err := EncodeFloat32(out[t*rowBytes:(t+1)*rowBytes], li.Shape.DType, row, dsc); err != nil {
				return nil, fmt.Errorf("fp8 decode layer %d: %w", li.Index, err)
			}
			off += ch
		}
	}
	return dst, nil
}

func kvName(h int) string {
	if h == 0 {
		return "K"
	}
	return "V"
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
