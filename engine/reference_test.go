package engine

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
)

// The three texts of the model README, printed by upstream run.c.
const (
	refStory200 = `Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said, "Lily, let's go to the park." Lily was sad and didn't know what to do. She said, "I want to play with your ball, but I can't find it."
Lily was sad and didn't know what to do. She said, "I'm sorry, Lily. I didn't know what to do."
Lily didn't want to help her mom, so she`
	refZoo60  = `Zoo was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but she didn't want to play with`
	refOnce64 = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily"
)

type referenceKV struct {
	Prompt       string        `json:"prompt"`
	PromptTokens []Token       `json:"prompt_tokens"`
	Layers       int           `json:"n_layers"`
	KVDim        int           `json:"kv_dim"`
	KeyCache     [][][]float64 `json:"key_cache"`
	ValueCache   [][][]float64 `json:"value_cache"`
	LastLogits   []float64     `json:"last_logits"`
	GreedyNext   []Token       `json:"greedy_next_tokens"`
}

func loadReference(t testing.TB) referenceKV {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Stories260K(t), "reference_once_upon_a_time.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r referenceKV
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("decode reference: %v", err)
	}
	return r
}

func openStories(t testing.TB) (*Engine, *Tokenizer) {
	t.Helper()
	e, tok, err := Open(testutil.Stories260K(t))
	if err != nil {
		t.Fatalf("open stories260K: %v", err)
	}
	return e, tok
}

// runLikeRunC returns what run.c prints for -t 0 -n steps -i prompt.
func runLikeRunC(t *testing.T, e *Engine, tok *Tokenizer, prompt string, steps int) string {
	t.Helper()
	var sb strings.Builder
	_, err := e.Generate(t.Context(), tok, GenerateOptions{Prompt: prompt, Steps: steps}, func(p string) error {
		sb.WriteString(Printable(p))
		return nil
	})
	if err != nil {
		t.Fatalf("generate %q: %v", prompt, err)
	}
	return sb.String()
}

func TestReferenceTexts(t *testing.T) {
	e, tok := openStories(t)
	for _, tc := range []struct {
		name, prompt string
		steps        int
		want         string
	}{
		{"story200", "", 200, refStory200},
		{"zoo60", "Zoo", 60, refZoo60},
		{"once64", "Once upon a time", 64, refOnce64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runLikeRunC(t, e, tok, tc.prompt, tc.steps); got != tc.want {
				t.Errorf("run -t 0 -n %d -i %q printed\n%q\nwant\n%q", tc.steps, tc.prompt, got, tc.want)
			}
		})
	}
}

func TestReferenceKVAndLogits(t *testing.T) {
	e, tok := openStories(t)
	ref := loadReference(t)
	got := tok.Encode(ref.Prompt, true, false)
	if !equalTokens(got, ref.PromptTokens) {
		t.Fatalf("encode %q = %v, want %v", ref.Prompt, got, ref.PromptTokens)
	}
	const tol = 1e-5
	// Batch prefill and token-by-token decoding must both match.
	for _, mode := range []string{"batch", "stepwise"} {
		t.Run(mode, func(t *testing.T) {
			s := e.NewState()
			var logits []float32
			var err error
			if mode == "batch" {
				logits, err = s.Forward(ref.PromptTokens)
			} else {
				for _, tk := range ref.PromptTokens {
					if logits, err = s.Forward([]Token{tk}); err != nil {
						break
					}
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ref.KeyCache) != e.Config().Layers {
				t.Fatalf("reference has %d layers", len(ref.KeyCache))
			}
			worst := 0.0
			for l := range e.Config().Layers {
				k, v := s.Layer(l)
				for pos := range ref.PromptTokens {
					for j := range ref.KVDim {
						for _, c := range []struct {
							name string
							got  float32
							want float64
						}{{"key", k[pos*ref.KVDim+j], ref.KeyCache[l][pos][j]}, {"value", v[pos*ref.KVDim+j], ref.ValueCache[l][pos][j]}} {
							d := math.Abs(float64(c.got) - c.want)
							worst = max(worst, d)
							if d > tol {
								t.Errorf("layer %d pos %d %s[%d] = %.9g, want %.9g (|Δ| %.3g > %g)", l, pos, c.name, j, c.got, c.want, d, tol)
							}
						}
					}
				}
			}
			for i, w := range ref.LastLogits {
				d := math.Abs(float64(logits[i]) - w)
				worst = max(worst, d)
				if d > tol {
					t.Errorf("logit %d = %.9g, want %.9g", i, logits[i], w)
				}
			}
			t.Logf("largest |Δ| over K, V and logits: %.3g", worst)
			gen, err := s.Greedy(logits, len(ref.GreedyNext))
			if err != nil {
				t.Fatal(err)
			}
			if !equalTokens(gen, ref.GreedyNext) {
				t.Errorf("greedy tokens\n%v\nwant\n%v", gen, ref.GreedyNext)
			}
		})
	}
}

func equalTokens(a, b []Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
