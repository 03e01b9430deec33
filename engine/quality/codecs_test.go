package quality

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kvloom/kvloom/kvcache"
)

// TestEvalCodecsShape asserts what must hold on the real model's KV:
// float32 storage is exact; fp16 and zstd over it lose the same little;
// zstd barely compresses KV; every lossy codec compresses, CacheGen more
// with each level while its error grows; and kvcache.ChooseCodec picks
// from the measured profiles.
func TestEvalCodecsShape(t *testing.T) {
	e, tok := openStories(t)
	rep, err := EvalCodecs(t.Context(), e, tok, CodecOptions{
		Set:     SetOptions{Docs: 6, Prompts: 4, DocTokens: 40, MaxDocs: 3, Continue: 12},
		MinTime: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	get := func(name string) CodecResult {
		r, ok := rep.Result(name)
		if !ok {
			t.Fatalf("no result for %s", name)
		}
		return r
	}
	f32, f16, zs, fp8 := get("f32"), get("f16"), get("zstd"), get("fp8")
	if f32.RelRMSE != 0 || f32.MeanKL != 0 || f32.Top1 != 1 || f32.Ratio != 0.5 {
		t.Errorf("f32 storage is not exact: %+v", f32)
	}
	if zs.RelRMSE != f16.RelRMSE || zs.MeanKL != f16.MeanKL || f16.Ratio != 1 {
		t.Errorf("zstd is not lossless over fp16: %+v vs %+v", zs, f16)
	}
	if zs.Ratio < 1 || zs.Ratio > 1.5 {
		t.Errorf("zstd compresses fp16 KV %.2fx; expected a little (KV is near-random mantissas)", zs.Ratio)
	}
	if fp8.Ratio < 1.7 || fp8.RelRMSE > 0.05 || fp8.RelRMSE <= f16.RelRMSE {
		t.Errorf("fp8: %+v", fp8)
	}
	prev := CodecResult{Ratio: 1}
	for l := 1; l <= kvcache.CacheGenMaxLevel; l++ {
		cg := get("cachegen:" + string(rune('0'+l)))
		if cg.Ratio <= prev.Ratio || cg.RelRMSE <= prev.RelRMSE {
			t.Errorf("cachegen:%d ratio %.2f error %.4f, level below %.2f %.4f", l, cg.Ratio, cg.RelRMSE, prev.Ratio, prev.RelRMSE)
		}
		if cg.EncodeMBps <= 0 || cg.DecodeMBps <= 0 {
			t.Errorf("cachegen:%d throughput not measured", l)
		}
		prev = cg
	}
	if get("cachegen:1").MeanKL > fp8.MeanKL {
		t.Errorf("cachegen:1 (8-bit) loses more than fp8: %g > %g", get("cachegen:1").MeanKL, fp8.MeanKL)
	}
	// a slow link with a loose bound takes the smallest encoding; a very
	// fast one takes raw fp16, which needs no decoding
	profiles := rep.Profiles()
	c, err := kvcache.ChooseCodec(int64(rep.FP16Bytes), profiles, kvcache.LinkBudget{Bandwidth: 1e3, MaxLoss: 1})
	if err != nil || c.Profile.Name != "cachegen:4" {
		t.Errorf("slow link: %+v, %v", c.Profile, err)
	}
	c, err = kvcache.ChooseCodec(int64(rep.FP16Bytes), profiles, kvcache.LinkBudget{Bandwidth: 1e15, MaxLoss: 1})
	if err != nil || (c.Profile.Name != "f16" && c.Profile.Name != "f32") {
		t.Errorf("fast link: %+v, %v", c.Profile, err)
	}
	if _, err := EvalCodecs(t.Context(), e, tok, CodecOptions{Codecs: []string{"lz5"}, Set: SetOptions{Docs: 2, Prompts: 1, MaxDocs: 2, DocTokens: 30}}); !errors.Is(err, ErrOptions) {
		t.Errorf("unknown codec: %v", err)
	}
}
