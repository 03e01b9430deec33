package kvcache

import (
	"bytes"
	"encoding/binary"
	"math"
)

// A minimal GGUF v3 writer for tests: enough to build metadata-only model
// files and files with small tensors (rope_freqs), so the GGUF loader is
// tested on real files without shipping multi-GB models.

const (
	gU8, gI8, gU16, gI16, gU32, gI32, gF32, gBool, gStr, gArr, gU64, gI64, gF64 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
)

type ggufKV struct {
	key string
	typ uint32
	val any // numeric Go value, string, or ggufArray
}

type ggufArray struct {
	typ  uint32
	vals []any
}

type ggufTensor struct {
	name string
	dims []uint64
	typ  uint32 // ggml type: 0 = F32
	data []byte
}

func ggufWriteValue(b *bytes.Buffer, typ uint32, v any) {
	le := binary.LittleEndian
	switch typ {
	case gU8:
		b.WriteByte(uint8(toF(v)))
	case gI8:
		b.WriteByte(byte(int8(toF(v))))
	case gU16:
		_ = binary.Write(b, le, uint16(toF(v)))
	case gI16:
		_ = binary.Write(b, le, int16(toF(v)))
	case gU32:
		_ = binary.Write(b, le, uint32(toF(v)))
	case gI32:
		_ = binary.Write(b, le, int32(toF(v)))
	case gF32:
		_ = binary.Write(b, le, float32(toF(v)))
	case gBool:
		if v.(bool) {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case gStr:
		s := v.(string)
		_ = binary.Write(b, le, uint64(len(s)))
		b.WriteString(s)
	case gArr:
		a := v.(ggufArray)
		_ = binary.Write(b, le, a.typ)
		_ = binary.Write(b, le, uint64(len(a.vals)))
		for _, e := range a.vals {
			ggufWriteValue(b, a.typ, e)
		}
	case gU64:
		_ = binary.Write(b, le, uint64(toF(v)))
	case gI64:
		_ = binary.Write(b, le, int64(toF(v)))
	case gF64:
		_ = binary.Write(b, le, toF(v))
	}
}

func toF(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	case float32:
		return float64(x)
	case uint64:
		return float64(x)
	}
	panic("ggufWriteValue: unsupported Go value")
}

// writeGGUF encodes a GGUF v3 file.
func writeGGUF(kvs []ggufKV, tensors []ggufTensor) []byte {
	le := binary.LittleEndian
	var b bytes.Buffer
	b.WriteString("GGUF")
	_ = binary.Write(&b, le, uint32(3))
	_ = binary.Write(&b, le, uint64(len(tensors)))
	_ = binary.Write(&b, le, uint64(len(kvs)))
	for _, kv := range kvs {
		ggufWriteValue(&b, gStr, kv.key)
		_ = binary.Write(&b, le, kv.typ)
		ggufWriteValue(&b, kv.typ, kv.val)
	}
	const align = 32
	off := uint64(0)
	offs := make([]uint64, len(tensors))
	for i, t := range tensors {
		offs[i] = off
		off += (uint64(len(t.data)) + align - 1) / align * align
	}
	for i, t := range tensors {
		ggufWriteValue(&b, gStr, t.name)
		_ = binary.Write(&b, le, uint32(len(t.dims)))
		for _, d := range t.dims {
			_ = binary.Write(&b, le, d)
		}
		_ = binary.Write(&b, le, t.typ)
		_ = binary.Write(&b, le, offs[i])
	}
	for b.Len()%align != 0 {
		b.WriteByte(0)
	}
	for _, t := range tensors {
		b.Write(t.data)
		for b.Len()%align != 0 {
			b.WriteByte(0)
		}
	}
	return b.Bytes()
}

func f32Tensor(name string, vals []float64) ggufTensor {
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(v)))
	}
	return ggufTensor{name: name, dims: []uint64{uint64(len(vals))}, typ: 0, data: data}
}

// ggufFromSpec writes the metadata llama.cpp would write for s, with a tiny
// output.weight tensor when the classifier is not tied and a rope_freqs
// tensor for freq-factor scaling.
func ggufFromSpec(s ModelSpec) []byte {
	a := s.Arch
	kvs := []ggufKV{
		{"general.architecture", gStr, a},
		{"general.name", gStr, s.Name},
		{a + ".block_count", gU32, s.Layers},
		{a + ".attention.head_count", gU32, s.AttnHeads},
		{a + ".attention.head_count_kv", gU32, s.KVHeads},
		{a + ".attention.key_length", gU32, s.HeadDim},
		{a + ".attention.value_length", gU32, s.HeadDim},
		{a + ".embedding_length", gU32, s.HiddenSize},
		{a + ".feed_forward_length", gU32, s.IntermediateSize},
		{a + ".context_length", gU32, s.MaxPositions},
		{a + ".rope.freq_base", gF64, s.RoPE.Theta},
		{a + ".rope.dimension_count", gU32, s.RotaryDim()},
		{a + ".attention.layer_norm_rms_epsilon", gF64, s.NormEps},
		{a + ".vocab_size", gU32, s.VocabSize},
	}
	if s.RoPE.Scaling.Type == ScalingLinear {
		kvs = append(kvs, ggufKV{a + ".rope.scaling.type", gStr, "linear"}, ggufKV{a + ".rope.scaling.factor", gF64, s.RoPE.Scaling.Factor})
	}
	var ts []ggufTensor
	if !s.TiedEmbeddings {
		ts = append(ts, f32Tensor("output.weight", []float64{1, 2}))
	}
	if s.QKVBias {
		ts = append(ts, f32Tensor("blk.0.attn_q.bias", []float64{0}))
	}
	if s.RoPE.Scaling.Type == ScalingFreqFactors {
		ts = append(ts, f32Tensor("rope_freqs.weight", s.RoPE.Scaling.FreqFactors))
	}
	return writeGGUF(kvs, ts)
}
