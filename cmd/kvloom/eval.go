package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/engine/quality"
	"github.com/kvloom/kvloom/kvcache"
)

func newEvalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "measure quality on the real model: KV blending policies and KV codecs",
	}
	cmd.AddCommand(newEvalBlendCmd(), newEvalCodecsCmd())
	return cmd
}

func newEvalCodecsCmd() *cobra.Command {
	var (
		model     string
		opts      quality.CodecOptions
		codecs    string
		asJSON    bool
		bandwidth float64
		deadline  time.Duration
		maxKL     float64
	)
	cmd := &cobra.Command{
		Use:   "codecs",
		Short: "measure KV codecs (fp8, cachegen:L, zstd) on the real model's KV: size, speed, error, downstream KL",
		Long: `codecs exports the KV the model computes over the evaluation set's stories and
measures each codec on it: compression ratio against fp16, encode and decode
throughput as a ratio to copy() on the same bytes, reconstruction error, and the
downstream KL / top-1 agreement when the engine continues each prompt from its
decoded KV. With --bandwidth it also says which codec kvcache.ChooseCodec picks
for a link of that rate under --deadline and --max-kl.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := modelDir(model)
			if err != nil {
				return err
			}
			for _, c := range strings.Split(codecs, ",") {
				opts.Codecs = append(opts.Codecs, strings.TrimSpace(c))
			}
			e, tok, err := engine.Open(dir)
			if err != nil {
				return err
			}
			rep, err := quality.EvalCodecs(cmd.Context(), e, tok, opts)
			if errors.Is(err, quality.ErrOptions) {
				return fmt.Errorf("%w: %w", err, errUsage)
			} else if err != nil {
				return err
			}
			var choice *kvcache.CodecChoice
			if bandwidth > 0 {
				c, err := kvcache.ChooseCodec(int64(rep.FP16Bytes), rep.Profiles(), kvcache.LinkBudget{Bandwidth: bandwidth * 1e6, Deadline: deadline, MaxLoss: maxKL})
				if err != nil {
					return err
				}
				choice = &c
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, struct {
					*quality.CodecReport
					Choice *kvcache.CodecChoice `json:"choice,omitempty"`
				}{rep, choice})
			}
			if err := rep.WriteTable(out); err != nil {
				return err
			}
			if choice != nil {
				fmt.Fprintf(out, "\nlink %.0f MB/s, deadline %v, KL <= %g: %s (load %v + decode %v, meets deadline: %v)\n",
					bandwidth, deadline, maxKL, choice.Profile.Name, choice.Load, choice.Decode, choice.MeetsDeadline)
			}
			return nil
		},
	}
	setFlags(cmd, &opts.Set)
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "llama2.c model directory; default: ../shared/testdata/models/stories260K when it exists")
	f.StringVar(&codecs, "codecs", strings.Join(quality.DefaultCodecs(), ","), "comma-separated codecs: f32, f16, zstd, fp8, cachegen:1..4")
	f.DurationVar(&opts.MinTime, "min-time", 200*time.Millisecond, "how long each throughput measurement runs at least")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.Float64Var(&bandwidth, "bandwidth", 0, "link bandwidth in MB/s: also pick a codec for the evaluation set's KV with kvcache.ChooseCodec")
	f.DurationVar(&deadline, "deadline", 0, "load deadline for --bandwidth (0: none)")
	f.Float64Var(&maxKL, "max-kl", 0.01, "quality bound for --bandwidth: the largest mean KL accepted")
	return cmd
}

// setFlags binds the evaluation-set flags shared by the eval commands.
func setFlags(cmd *cobra.Command, o *quality.SetOptions) {
	f := cmd.Flags()
	f.IntVar(&o.Docs, "docs", 24, "stories generated for the document pool")
	f.IntVar(&o.Prompts, "prompts", 24, "prompts composed from the pool")
	f.IntVar(&o.MinDocs, "min-docs", 2, "documents per prompt, at least")
	f.IntVar(&o.MaxDocs, "max-docs", 6, "documents per prompt, at most")
	f.IntVar(&o.DocTokens, "doc-tokens", 64, "tokens per story, at most")
	f.IntVar(&o.Continue, "continue", 32, "continuation positions scored per prompt")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the stories and of the prompt composition")
}

// checkPlotPath accepts the plot formats gonum/plot writes.
func checkPlotPath(path string) error {
	switch strings.TrimPrefix(filepath.Ext(path), ".") {
	case "svg", "png", "pdf":
		return nil
	}
	return fmt.Errorf("--plot %s: want a .svg, .png or .pdf file: %w", path, errUsage)
}

// writePlotFile writes a plot in the format its extension names (checked
// by checkPlotPath before the evaluation ran). It buffers the plot so that
// a failed plot leaves no partial file.
func writePlotFile(path string, plot func(w io.Writer, format string) error) error {
	var buf bytes.Buffer
	if err := plot(&buf, strings.TrimPrefix(filepath.Ext(path), ".")); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func newEvalBlendCmd() *cobra.Command {
	var (
		model    string
		opts     quality.BlendOptions
		policies string
		asJSON   bool
		plotPath string
	)
	cmd := &cobra.Command{
		Use:   "blend",
		Short: "compare KV reuse policies (full reuse, prefix, epic:k, CacheBlend ratio:r) with a full prefill",
		Long: `blend builds an evaluation set from the model's own stories (deterministic seeds),
prompts of several stories and a continuation cue, and compares each policy's
next-token distributions over the continuation with a full prefill: mean KL,
top-1 agreement, greedy-continuation match length, fraction recomputed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := modelDir(model)
			if err != nil {
				return err
			}
			for _, s := range strings.Split(policies, ",") {
				p, err := quality.ParsePolicy(strings.TrimSpace(s))
				if err != nil {
					return fmt.Errorf("--policies: %w: %w", err, errUsage)
				}
				opts.Policies = append(opts.Policies, p)
			}
			if plotPath != "" {
				if err := checkPlotPath(plotPath); err != nil {
					return err
				}
			}
			e, tok, err := engine.Open(dir)
			if err != nil {
				return err
			}
			rep, err := quality.EvalBlend(cmd.Context(), e, tok, opts)
			if errors.Is(err, quality.ErrOptions) {
				return fmt.Errorf("%w: %w", err, errUsage)
			} else if err != nil {
				return err
			}
			if plotPath != "" {
				if err := writePlotFile(plotPath, rep.WritePlot); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	setFlags(cmd, &opts.Set)
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "llama2.c model directory; default: ../shared/testdata/models/stories260K when it exists")
	f.StringVar(&policies, "policies", "full,reuse,prefix,epic:1,epic:4,epic:16,ratio:5%,ratio:15%,ratio:30%", "comma-separated policies: full, reuse, prefix, epic:K, ratio:R")
	f.IntSliceVar(&opts.CheckLayers, "check-layers", []int{1, 2}, "CacheBlend's selecting layers, ascending (LMCache's default is 1; two or more filter gradually)")
	f.Float64Var(&opts.Widen, "widen", 2, "CacheBlend's gradual filtering: each check layer keeps widen× more candidates than the next")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.StringVar(&plotPath, "plot", "", "also write a plot of KL against recompute fraction (.svg, .png or .pdf)")
	return cmd
}
