package quality

import (
	"testing"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/kvcache"
)

// BenchmarkCodecsRealKV times each codec on the KV stories260K computes
// for 16 of its own stories (fp16, one layer at a time), against copy()
// of the same bytes.
func BenchmarkCodecsRealKV(b *testing.B) {
	e, tok := openStories(b)
	set, err := NewSet(b.Context(), e, tok, SetOptions{Docs: 16, Prompts: 1, MaxDocs: 2})
	if err != nil {
		b.Fatal(err)
	}
	s := e.NewState()
	var kl kvLayers
	for _, d := range set.Docs {
		s.Reset()
		if _, err := s.Forward(append([]engine.Token{engine.TokenBOS}, d.Tokens...)); err != nil {
			b.Fatal(err)
		}
		kv, err := s.ExportKV(1, s.Len(), kvcache.F16)
		if err != nil {
			b.Fatal(err)
		}
		kl.add(kv)
	}
	for _, name := range []string{"zstd", "fp8", "cachegen:1", "cachegen:2", "cachegen:3", "cachegen:4"} {
		lc, closeCodec, err := newLayerCodec(name)
		if err != nil {
			b.Fatal(err)
		}
		encs := make([][]byte, len(kl.layers))
		size := 0
		for i, l := range kl.layers {
			if encs[i], err = lc.encode(nil, kl.infos[i], l); err != nil {
				b.Fatal(err)
			}
			size += len(encs[i])
		}
		b.Run(name+"/encode", func(b *testing.B) {
			b.SetBytes(int64(kl.bytes))
			b.ReportAllocs()
			dst := make([][]byte, len(kl.layers))
			for b.Loop() {
				for i, l := range kl.layers {
					if dst[i], err = lc.encode(dst[i][:0], kl.infos[i], l); err != nil {
						b.Fatal(err)
					}
				}
			}
			benchutil.ReportRatio(b, "x-vs-copy", float64(kl.bytes), benchutil.CopyBaseline(kl.bytes))
			b.ReportMetric(float64(kl.bytes)/float64(size), "ratio-vs-fp16")
		})
		b.Run(name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(kl.bytes))
			b.ReportAllocs()
			dst := make([][]byte, len(kl.layers))
			for i := range dst {
				dst[i] = make([]byte, kl.infos[i].Bytes())
			}
			for b.Loop() {
				for i, enc := range encs {
					if _, err := lc.decode(dst[i], kl.infos[i], enc); err != nil {
						b.Fatal(err)
					}
				}
			}
			benchutil.ReportRatio(b, "x-vs-copy", float64(kl.bytes), benchutil.CopyBaseline(kl.bytes))
		})
		closeCodec()
	}
}
