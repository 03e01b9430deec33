package quality

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/internal/testutil"
)

func openStories(t testing.TB) (*engine.Engine, *engine.Tokenizer) {
	t.Helper()
	e, tok, err := engine.Open(testutil.Stories260K(t))
	if err != nil {
		t.Fatal(err)
	}
	return e, tok
}

// smallBlend is the evaluation the tests run: small enough for CI under
// -race, large enough that the shape below holds with margin.
var smallBlend = BlendOptions{Set: SetOptions{Docs: 12, Prompts: 10, DocTokens: 40, MaxDocs: 4, Continue: 16}}

// pairedWorse returns mean(KL_a − KL_b) over prompts and its standard
// error: the per-prompt pairing removes the prompts' own difficulty from
// the noise.
func pairedDiff(a, b PolicyResult) (mean, se float64) {
	d := make([]float64, len(a.PromptKL))
	for i := range d {
		d[i] = a.PromptKL[i] - b.PromptKL[i]
	}
	return MeanStdErr(d)
}

func mustResult(t *testing.T, rep *BlendReport, name string) PolicyResult {
	t.Helper()
	r, ok := rep.Result(name)
	if !ok {
		t.Fatalf("no result for %s", name)
	}
	return r
}

// TestEvalBlendShape asserts what must hold whatever the exact numbers:
// 100% recompute is the full prefill; more recompute never makes mean KL
// worse by more than noise; full reuse is measurably worse than CacheBlend
// at 15%.
func TestEvalBlendShape(t *testing.T) {
	e, tok := openStories(t)
	rep, err := EvalBlend(t.Context(), e, tok, smallBlend)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if len(rep.Results) != len(DefaultPolicies()) || rep.Positions != 10*16 {
		t.Fatalf("%d results, %d positions", len(rep.Results), rep.Positions)
	}

	full := mustResult(t, rep, "full")
	if full.MeanKL != 0 || full.Top1 != 1 || full.MatchLen != 16 || full.Recomputed != 1 {
		t.Fatalf("full recompute over stitched KV is not the full prefill: %+v", full)
	}
	// ratio 100% recomputes every non-prefix token too
	r100 := mustResult(t, mustEval(t, e, tok, []string{"ratio:100%"}), "ratio:100%")
	if r100.MeanKL != 0 || r100.Top1 != 1 {
		t.Fatalf("ratio:100%% differs from the full prefill: %+v", r100)
	}

	// noise: twice the paired standard error, and a floor for KLs that
	// are all but zero
	const floor = 1e-4
	for _, chain := range [][]string{
		{"reuse", "epic:1", "epic:4", "epic:16", "full"},
		{"reuse", "ratio:5%", "ratio:15%", "ratio:30%", "full"},
	} {
		for i := 1; i < len(chain); i++ {
			less, more := mustResult(t, rep, chain[i-1]), mustResult(t, rep, chain[i])
			if more.Recomputed < less.Recomputed {
				t.Errorf("%s recomputes %.3f, less than %s's %.3f", more.Policy, more.Recomputed, less.Policy, less.Recomputed)
			}
			d, se := pairedDiff(more, less)
			if d > 2*se+floor {
				t.Errorf("%s (KL %.5f) is worse than %s (KL %.5f) by %.5f, noise %.5f", more.Policy, more.MeanKL, less.Policy, less.MeanKL, d, 2*se+floor)
			}
		}
	}
	reuse, r15 := mustResult(t, rep, "reuse"), mustResult(t, rep, "ratio:15%")
	d, se := pairedDiff(reuse, r15)
	if !(d > 2*se && reuse.MeanKL > 2*r15.MeanKL) {
		t.Errorf("full reuse (KL %.5f) is not measurably worse than ratio:15%% (KL %.5f): paired Δ %.5f ± %.5f", reuse.MeanKL, r15.MeanKL, d, se)
	}
	if reuse.Top1 >= r15.Top1 || reuse.MatchLen >= r15.MatchLen {
		t.Errorf("full reuse top-1 %.3f / match %.1f not below ratio:15%%'s %.3f / %.1f", reuse.Top1, reuse.MatchLen, r15.Top1, r15.MatchLen)
	}
	prefix := mustResult(t, rep, "prefix")
	if prefix.MeanKL != 0 || prefix.Recomputed >= 1 || prefix.Recomputed <= 0 {
		t.Errorf("prefix-only reuse: %+v", prefix)
	}

	// the report round-trips through JSON and plots
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back BlendReport
	if err := json.Unmarshal(b, &back); err != nil || !slices.EqualFunc(back.Results, rep.Results, func(a, b PolicyResult) bool { return a.Policy == b.Policy && a.MeanKL == b.MeanKL }) {
		t.Fatalf("JSON round trip: %v", err)
	}
	var svg bytes.Buffer
	if err := rep.WritePlot(&svg, "svg"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg.String(), "<svg") || !strings.Contains(svg.String(), "ratio:15%") {
		t.Fatal("plot is not an SVG naming the policies")
	}
}

func mustEval(t *testing.T, e *engine.Engine, tok *engine.Tokenizer, policies []string) *BlendReport {
	t.Helper()
	o := smallBlend
	o.Set.Prompts = 3
	o.Policies = nil
	for _, s := range policies {
		p, err := ParsePolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		o.Policies = append(o.Policies, p)
	}
	rep, err := EvalBlend(t.Context(), e, tok, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestNewSetDeterministic(t *testing.T) {
	e, tok := openStories(t)
	o := SetOptions{Docs: 4, Prompts: 3, DocTokens: 30, MaxDocs: 3}
	a, err := NewSet(t.Context(), e, tok, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSet(t.Context(), e, tok, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Docs {
		if !slices.Equal(a.Docs[i].Tokens, b.Docs[i].Tokens) || len(a.Docs[i].Tokens) < a.Options.MinTokens || len(a.Docs[i].Tokens) > 30 {
			t.Fatalf("doc %d: %d and %d tokens", i, len(a.Docs[i].Tokens), len(b.Docs[i].Tokens))
		}
		text, err := tok.Decode(engine.TokenBOS, a.Docs[i].Tokens)
		if err != nil || !strings.HasPrefix(text, a.Docs[i].Opening) {
			t.Fatalf("doc %d %q does not start with %q (%v)", i, text, a.Docs[i].Opening, err)
		}
	}
	for i, p := range a.Prompts {
		if !slices.Equal(a.Tokens(p), b.Tokens(p)) || len(p.Docs) < 2 || len(p.Docs) > 3 {
			t.Fatalf("prompt %d differs or has %d docs", i, len(p.Docs))
		}
		if a.Tokens(p)[0] != engine.TokenBOS {
			t.Fatal("prompt does not start with BOS")
		}
	}
	o.Seed = 2
	c, err := NewSet(t.Context(), e, tok, o)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(c.Docs[0].Tokens, a.Docs[0].Tokens) {
		t.Fatal("another seed wrote the same story")
	}
	for _, bad := range []SetOptions{{Docs: 1}, {MinDocs: 5, MaxDocs: 3}, {MaxDocs: 30}, {DocTokens: 5}, {Continue: -1}, {Docs: 6, MinDocs: 6, DocTokens: 100}} {
		if _, err := NewSet(t.Context(), e, tok, bad); !errors.Is(err, ErrOptions) {
			t.Errorf("options %+v: %v", bad, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		name string
	}{
		{"full", Policy{Kind: Full}, "full"},
		{"reuse", Policy{Kind: Reuse}, "reuse"},
		{"prefix", Policy{Kind: Prefix}, "prefix"},
		{"epic:16", Policy{Kind: Epic, K: 16}, "epic:16"},
		{"ratio:15%", Policy{Kind: Ratio, Ratio: 0.15}, "ratio:15%"},
		{"ratio:0.3", Policy{Kind: Ratio, Ratio: 0.3}, "ratio:30%"},
	} {
		got, err := ParsePolicy(tc.in)
		if err != nil || got.Kind != tc.want.Kind || got.K != tc.want.K || math.Abs(got.Ratio-tc.want.Ratio) > 1e-12 || got.String() != tc.name {
			t.Errorf("ParsePolicy(%q) = %+v (%s), %v", tc.in, got, got.String(), err)
		}
	}
	for _, bad := range []string{"", "epic", "epic:0", "epic:x", "ratio:2", "ratio:-1%", "full:1", "none"} {
		if _, err := ParsePolicy(bad); !errors.Is(err, ErrOptions) {
			t.Errorf("ParsePolicy(%q): %v", bad, err)
		}
	}
}

func TestKL(t *testing.T) {
	p := []float32{1, 2, 3}
	if KL(p, p) != 0 {
		t.Fatal("KL(p, p) != 0")
	}
	q := []float32{3, 2, 1}
	// by hand: p = softmax(1,2,3)
	sp := []float64{math.Exp(1), math.Exp(2), math.Exp(3)}
	z := sp[0] + sp[1] + sp[2]
	want := 0.0
	for i := range 3 {
		pi := sp[i] / z
		qi := sp[2-i] / z
		want += pi * math.Log(pi/qi)
	}
	if got := KL(p, q); math.Abs(got-want) > 1e-12 {
		t.Fatalf("KL = %v, want %v", got, want)
	}
}
