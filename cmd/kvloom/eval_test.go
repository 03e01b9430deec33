package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
)

// tiny eval sizes: the commands' wiring, not the measurements (those are
// engine/quality's tests)
// tinySet is a small evaluation on the real model, named explicitly so that
// a missing model fails the test saying what to install.
func tinySet(t *testing.T) []string {
	return []string{"--model", testutil.Stories260K(t), "--docs", "4", "--prompts", "2", "--max-docs", "3", "--doc-tokens", "30", "--continue", "6"}
}

func TestEvalBlendCLI(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "blend.svg")
	out, err := runCLI(t, append([]string{"eval", "blend", "--policies", "full,reuse,ratio:15%", "--plot", plot}, tinySet(t)...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mean KL", "full", "reuse", "ratio:15%"} {
		if !strings.Contains(out, want) {
			t.Fatalf("table lacks %q:\n%s", want, out)
		}
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("plot: %v", err)
	}
	out, err = runCLI(t, append([]string{"eval", "blend", "--policies", "full,epic:4", "--json"}, tinySet(t)...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Results []struct {
			Policy string  `json:"policy"`
			MeanKL float64 `json:"mean_kl"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Results) != 2 || rep.Results[0].Policy != "full" || rep.Results[0].MeanKL != 0 {
		t.Fatalf("JSON %v: %s", err, out)
	}
	for _, bad := range [][]string{{"--policies", "nope"}, {"--plot", "x.gif"}} {
		if _, err := runCLI(t, append(append([]string{"eval", "blend"}, bad...), tinySet(t)...)...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestEvalCodecsCLI(t *testing.T) {
	out, err := runCLI(t, append([]string{"eval", "codecs", "--codecs", "f16,fp8,cachegen:2", "--min-time", "1ms", "--bandwidth", "10", "--max-kl", "1"}, tinySet(t)...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ratio vs fp16", "cachegen:2", "link 10 MB/s"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, append([]string{"eval", "codecs", "--codecs", "fp8", "--min-time", "1ms", "--json"}, tinySet(t)...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Results []struct {
			Codec string  `json:"codec"`
			Ratio float64 `json:"ratio_vs_fp16"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Results) != 1 || rep.Results[0].Ratio < 1.5 {
		t.Fatalf("JSON %v: %s", err, out)
	}
}
