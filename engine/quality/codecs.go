package quality

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/kvcache"
)

// DefaultCodecs are the codec settings EvalCodecs compares: float32 and
// fp16 stored raw, zstd over the fp16 bytes (the general-purpose
// baseline), fp8 with per-channel scales, and the CacheGen levels.
func DefaultCodecs() []string {
	out := []string{"f32", "f16", "zstd", "fp8"}
	for l := 1; l <= kvcache.CacheGenMaxLevel; l++ {
		out = append(out, fmt.Sprintf("cachegen:%d", l))
	}
	return out
}

// CodecOptions configures EvalCodecs. Zero values take the defaults in
// brackets.
type CodecOptions struct {
	Set    SetOptions
	Codecs []string // [DefaultCodecs]
	// MinTime is how long each throughput measurement runs at least
	// [200ms].
	MinTime time.Duration
}

// CodecResult is one codec's figures.
type CodecResult struct {
	Codec string `json:"codec"`
	// Ratio is fp16 bytes per encoded byte over the documents' KV.
	Ratio float64 `json:"ratio_vs_fp16"`
	// EncodeXCopy and DecodeXCopy are encode and decode throughput (KV
	// bytes per second, in the layer's dtype) divided by copy()'s on the
	// same bytes, measured in the same run.
	EncodeXCopy float64 `json:"encode_x_vs_copy"`
	DecodeXCopy float64 `json:"decode_x_vs_copy"`
	EncodeMBps  float64 `json:"encode_mb_per_s"`
	DecodeMBps  float64 `json:"decode_mb_per_s"`
	// RelRMSE and MaxAbsErr compare the decoded KV with the float32 KV
	// the engine computed.
	RelRMSE   float64 `json:"rel_rmse"`
	MaxAbsErr float64 `json:"max_abs_err"`
	// MeanKL, KLStdErr, Top1 and MatchLen are the downstream quality when
	// the engine continues every prompt from its decoded KV (the prompt's
	// full-prefill KV, encoded and decoded), as in BlendReport.
	MeanKL   float64 `json:"mean_kl"`
	KLStdErr float64 `json:"kl_stderr"`
	Top1     float64 `json:"top1_agreement"`
	MatchLen float64 `json:"greedy_match_len"`
}

// CodecReport is the result of EvalCodecs.
type CodecReport struct {
	Model     string        `json:"model"`
	Set       SetOptions    `json:"set"`
	Tokens    int           `json:"kv_tokens"`
	FP16Bytes int           `json:"fp16_bytes"`
	CopyMBps  float64       `json:"copy_mb_per_s"`
	Results   []CodecResult `json:"results"`
}

// Result returns the result of the named codec.
func (r *CodecReport) Result(codec string) (CodecResult, bool) {
	for _, x := range r.Results {
		if x.Codec == codec {
			return x, true
		}
	}
	return CodecResult{}, false
}

// Profiles turns the report into kvcache.ChooseCodec's input: ratio vs
// fp16, decode rate (zero for raw storage, which needs no decoding) and
// mean KL as the loss.
func (r *CodecReport) Profiles() []kvcache.CodecProfile {
	var out []kvcache.CodecProfile
	for _, x := range r.Results {
		p := kvcache.CodecProfile{Name: x.Codec, Ratio: x.Ratio, DecodeRate: x.DecodeMBps * 1e6, Loss: x.MeanKL}
		if x.Codec == "f16" || x.Codec == "f32" {
			p.DecodeRate = 0
		}
		out = append(out, p)
	}
	return out
}

// layerCodec is a codec applied to a layer stored in dtype.
type layerCodec struct {
	name   string
	dtype  kvcache.DType
	encode func(dst []byte, li kvcache.LayerInfo, kv []byte) ([]byte, error)
	decode func(dst []byte, li kvcache.LayerInfo, enc []byte) ([]byte, error)
}

// newLayerCodec resolves a codec name; the returned closer stops zstd's
// encoder and decoder.
func newLayerCodec(name string) (*layerCodec, func(), error) {
	fromCodec := func(c kvcache.Codec, dt kvcache.DType) *layerCodec {
		return &layerCodec{name: name, dtype: dt, encode: c.EncodeLayer, decode: c.DecodeLayer}
	}
	switch {
	case name == "f32":
		return fromCodec(kvcache.Raw{}, kvcache.F32), func() {}, nil
	case name == "f16":
		return fromCodec(kvcache.Raw{}, kvcache.F16), func() {}, nil
	case name == "fp8":
		return fromCodec(kvcache.FP8{}, kvcache.F16), func() {}, nil
	case strings.HasPrefix(name, "cachegen:"):
		c, err := kvcache.ParseCacheGen(name)
		if err != nil {
			return nil, nil, fmt.Errorf("codec %q: %w: %w", name, ErrOptions, err)
		}
		return fromCodec(c, kvcache.F16), func() {}, nil
	case name == "zstd":
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			enc.Close()
			return nil, nil, err
		}
		lc := &layerCodec{
			name: name, dtype: kvcache.F16,
			encode: func(dst []byte, _ kvcache.LayerInfo, kv []byte) ([]byte, error) { return enc.EncodeAll(kv, dst), nil },
			decode: func(dst []byte, li kvcache.LayerInfo, b []byte) ([]byte, error) {
				out, err := dec.DecodeAll(b, dst[:0])
				if err == nil && len(out) != li.Bytes() {
					err = fmt.Errorf("zstd layer of %d bytes, want %d", len(out), li.Bytes())
				}
				return out, err
			},
		}
		return lc, func() { _ = enc.Close(); dec.Close() }, nil
	}
	return nil, nil, fmt.Errorf("codec %q: want f32, f16, zstd, fp8 or cachegen:1..%d: %w", name, kvcache.CacheGenMaxLevel, ErrOptions)
}

// kvLayers is a set of chunks' layers in one dtype.
type kvLayers struct {
	infos  []kvcache.LayerInfo
	layers [][]byte
	bytes  int
}

func (k *kvLayers) add(kv *kvcache.KV) {
	sh := kv.Shape()
	for l := range sh.Layers {
		b := kv.Layer(l)
		k.infos = append(k.infos, kvcache.LayerInfo{Index: l, Shape: sh, Tokens: kv.Tokens(), Scales: kvcache.Scales{K: kv.Scale(l, false), V: kv.Scale(l, true)}})
		k.layers = append(k.layers, b)
		k.bytes += len(b)
	}
}

// EvalCodecs measures every codec on KV the model computed over the
// evaluation set: each document's chunk for size, speed and
// reconstruction error, and each prompt's KV for downstream quality.
func EvalCodecs(ctx context.Context, e *engine.Engine, tok *engine.Tokenizer, opts CodecOptions) (*CodecReport, error) {
	if len(opts.Codecs) == 0 {
		opts.Codecs = DefaultCodecs()
	}
	if opts.MinTime == 0 {
		opts.MinTime = 200 * time.Millisecond
	}
	set, err := NewSet(ctx, e, tok, opts.Set)
	if err != nil {
		return nil, fmt.Errorf("eval codecs: %w", err)
	}
	rep := &CodecReport{Model: e.Model().Spec.Name, Set: set.Options}
	// the documents' KV, as a store would hold it (after BOS)
	s := e.NewState()
	perDType := map[kvcache.DType]*kvLayers{kvcache.F32: {}, kvcache.F16: {}}
	for i, d := range set.Docs {
		s.Reset()
		if _, err := s.Forward(append([]engine.Token{engine.TokenBOS}, d.Tokens...)); err != nil {
			return nil, fmt.Errorf("eval codecs: document %d: %w", i, err)
		}
		for dt, kl := range perDType {
			kv, err := s.ExportKV(1, s.Len(), dt)
			if err != nil {
				return nil, fmt.Errorf("eval codecs: %w", err)
			}
			kl.add(kv)
		}
		rep.Tokens += len(d.Tokens)
	}
	rep.FP16Bytes = perDType[kvcache.F16].bytes
	rep.CopyMBps = copyRate(perDType[kvcache.F16], opts.MinTime) / 1e6
	b, err := newBench(e, set)
	if err != nil {
		return nil, fmt.Errorf("eval codecs: %w", err)
	}
	refs := make([]*refRun, len(set.Prompts))
	for i, p := range set.Prompts {
		if refs[i], err = b.reference(p); err != nil {
			return nil, fmt.Errorf("eval codecs: prompt %d: %w", i, err)
		}
	}
	for _, name := range opts.Codecs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval codecs: %w", err)
		}
		lc, closeCodec, err := newLayerCodec(name)
		if err != nil {
			return nil, fmt.Errorf("eval codecs: %w", err)
		}
		res, encoded, err := b.evalCodec(lc, perDType[lc.dtype], perDType[kvcache.F32], refs, opts.MinTime)
		closeCodec()
		if err != nil {
			return nil, fmt.Errorf("eval codecs: %s: %w", name, err)
		}
		res.Ratio = float64(rep.FP16Bytes) / float64(encoded)
		res.EncodeXCopy = res.EncodeMBps / rep.CopyMBps
		res.DecodeXCopy = res.DecodeMBps / rep.CopyMBps
		rep.Results = append(rep.Results, res)
	}
	return rep, nil
}

// copyRate is copy()'s rate over the layers, in bytes per second.
func copyRate(kl *kvLayers, minTime time.Duration) float64 {
	dst := make([][]byte, len(kl.layers))
	for i, l := range kl.layers {
		dst[i] = make([]byte, len(l))
	}
	return timeRate(kl.bytes, minTime, func() error {
		for i, l := range kl.layers {
			copy(dst[i], l)
		}
		return nil
	})
}

// timeRate runs op until minTime has passed and returns bytes per second.
func timeRate(bytes int, minTime time.Duration, op func() error) float64 {
	if err := op(); err != nil { // warm up
		return 0
	}
	n := 0
	start := time.Now()
	for time.Since(start) < minTime || n == 0 {
		if err := op(); err != nil {
			return 0
		}
		n++
	}
	return float64(bytes) * float64(n) / time.Since(start).Seconds()
}

// evalCodec measures lc on the layers in (and on each prompt's KV
// downstream); it also returns the encoded size of in, from which the
// caller derives the ratio against fp16.
func (b *bench) evalCodec(lc *layerCodec, in, ref32 *kvLayers, refs []*refRun, minTime time.Duration) (CodecResult, int, error) {
	res := CodecResult{Codec: lc.name}
	encs := make([][]byte, len(in.layers))
	encoded := 0
	for i, l := range in.layers {
		enc, err := lc.encode(nil, in.infos[i], l)
		if err != nil {
			return res, 0, err
		}
		encs[i] = enc
		encoded += len(enc)
	}
	// reconstruction error against the engine's float32 KV
	var sqErr, sq float64
	var f, g []float32
	for i, enc := range encs {
		out, err := lc.decode(nil, in.infos[i], enc)
		if err != nil {
			return res, 0, err
		}
		li := in.infos[i]
		n := li.Bytes() / li.Shape.DType.Size()
		f, g = slices.Grow(f[:0], n)[:n], slices.Grow(g[:0], n)[:n]
		if err := decodeLayer(f, li, out); err != nil {
			return res, 0, err
		}
		if err := decodeLayer(g, ref32.infos[i], ref32.layers[i]); err != nil {
			return res, 0, err
		}
		for j, v := range g {
			d := float64(f[j] - v)
			sqErr += d * d
			sq += float64(v) * float64(v)
			res.MaxAbsErr = math.Max(res.MaxAbsErr, math.Abs(d))
		}
	}
	res.RelRMSE = math.Sqrt(sqErr / sq)
	// throughput
	scratch := make([][]byte, len(encs))
	res.EncodeMBps = timeRate(in.bytes, minTime, func() error {
		for i, l := range in.layers {
			var err error
			if scratch[i], err = lc.encode(scratch[i][:0], in.infos[i], l); err != nil {
				return err
			}
		}
		return nil
	}) / 1e6
	for i := range scratch {
		scratch[i] = make([]byte, in.infos[i].Bytes())
	}
	res.DecodeMBps = timeRate(in.bytes, minTime, func() error {
		for i, enc := range encs {
			if _, err := lc.decode(scratch[i], in.infos[i], enc); err != nil {
				return err
			}
		}
		return nil
	}) / 1e6
	// downstream: each prompt's own KV through the codec
	var acc accum
	s := b.s
	for pi, ref := range refs {
		p := b.set.Prompts[pi]
		docsEnd := len(ref.prompt) - len(p.Cue)
		s.Reset()
		if _, err := s.Forward(ref.prompt[:docsEnd]); err != nil {
			return res, 0, err
		}
		kv, err := s.ExportKV(0, docsEnd, lc.dtype)
		if err != nil {
			return res, 0, err
		}
		for l := range kv.Shape().Layers {
			li := kvcache.LayerInfo{Index: l, Shape: kv.Shape(), Tokens: docsEnd}
			enc, err := lc.encode(nil, li, kv.Layer(l))
			if err != nil {
				return res, 0, err
			}
			out, err := lc.decode(nil, li, enc)
			if err != nil {
				return res, 0, err
			}
			copy(kv.Layer(l), out)
		}
		if err := s.LoadKV(kv, ref.prompt[:docsEnd]); err != nil {
			return res, 0, err
		}
		last, _, err := s.Blend(p.Cue, engine.BlendOptions{})
		if err != nil {
			return res, 0, err
		}
		run, err := b.follow(last, ref)
		if err != nil {
			return res, 0, err
		}
		acc.add(ref, run)
	}
	r := acc.result(lc.name)
	res.MeanKL, res.KLStdErr, res.Top1, res.MatchLen = r.MeanKL, r.KLStdErr, r.Top1, r.MatchLen
	return res, encoded, nil
}

// decodeLayer converts a layer's K and V rows to float32.
func decodeLayer(dst []float32, li kvcache.LayerInfo, b []byte) error {
	half := len(dst) / 2
	hb := len(b) / 2
	if err := kvcache.DecodeFloat32(dst[:half], li.Shape.DType, b[:hb], li.Scales.K); err != nil {
		return err
	}
	return kvcache.DecodeFloat32(dst[half:], li.Shape.DType, b[hb:], li.Scales.V)
}

// WriteTable writes the report as an aligned text table.
func (r *CodecReport) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "model %s: KV of %d stories (%d tokens, %d bytes in fp16); downstream over %d prompts; copy() %.0f MB/s\n\n",
		r.Model, r.Set.Docs, r.Tokens, r.FP16Bytes, r.Set.Prompts, r.CopyMBps)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "codec\tratio vs fp16\tencode x copy\tdecode x copy\tencode MB/s\tdecode MB/s\trel RMSE\tmax |err|\tmean KL\ttop-1\tgreedy match\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%.2f\t%.3f\t%.3f\t%.0f\t%.0f\t%.2e\t%.2e\t%.2e\t%.3f\t%.1f\t\n",
			x.Codec, x.Ratio, x.EncodeXCopy, x.DecodeXCopy, x.EncodeMBps, x.DecodeMBps, x.RelRMSE, x.MaxAbsErr, x.MeanKL, x.Top1, x.MatchLen)
	}
	return tw.Flush()
}
