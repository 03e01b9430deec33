package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kvloom/kvloom/hostctl/demo"
)

func newDemoCmd() *cobra.Command {
	var (
		opts    demo.Options
		model   string
		asJSON  bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run an embedded kvloomd and drive it with the reference engine: chat and RAG reuse (what make demo runs)",
		Long: `demo starts an embedded kvloomd on its defaults (the simulated accelerator,
a memory and a disk tier under a temporary data directory, segments in a
temporary shared-memory directory, the API on a Unix socket) and drives it
through its gRPC API with the reference engine on the real tiny model
stories260K, as an inference engine would:

  chat  multi-turn conversations; each turn stores its KV and the next turn
        reuses it as a prefix: the output must equal a full prefill's;
  rag   stories the model wrote, stored once as shared chunks, then prompts
        of 2-6 of them in varying orders: non-prefix reuse with RoPE-corrected
        stitching and selective recompute, scored against a full prefill.

It prints requests served, tokens reused, bytes by tier, the engine's
prefill time with and without reuse, output equality, blended quality, the
device's matches and its checks, then shuts the daemon down and removes its
directories. It needs no configuration and exits non-zero if a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := modelDir(model)
			if err != nil {
				return err
			}
			opts.ModelDir = dir
			opts.Version = version
			out := cmd.OutOrStdout()
			if f, ok := out.(*os.File); ok && !asJSON && term.IsTerminal(int(f.Fd())) {
				opts.Progress = f
			}
			if verbose {
				opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			}
			sum, err := demo.Run(cmd.Context(), opts)
			if errors.Is(err, demo.ErrOptions) {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			if sum == nil {
				return err
			}
			if asJSON {
				if jerr := writeJSON(out, sum); jerr != nil {
					return errors.Join(err, jerr)
				}
				return err
			}
			return errors.Join(err, sum.WriteText(out))
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "llama2.c model directory (default: ../shared/testdata/models/stories260K when it exists)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON (no progress bar)")
	f.Uint64Var(&opts.Seed, "seed", 0, "seed of the documents, prompts and chat turns (0: 1)")
	f.IntVar(&opts.Conversations, "conversations", 0, "chat conversations (0: 6)")
	f.IntVar(&opts.Turns, "turns", 0, "turns per conversation (0: 5)")
	f.IntVar(&opts.Reply, "reply", 0, "tokens of each model reply (0: 24)")
	f.IntVar(&opts.Docs, "docs", 0, "stories stored as shared RAG chunks (0: 24)")
	f.IntVar(&opts.Prompts, "prompts", 0, "RAG prompts (0: 32)")
	f.IntVar(&opts.MaxDocs, "max-docs", 0, "most stories per RAG prompt (0: 6, or --docs when fewer)")
	f.IntVar(&opts.Continue, "continue", 0, "continuation positions scored per RAG prompt (0: 32)")
	f.StringVar(&opts.Recompute, "recompute", "", "recompute policy of the requests: none, full, epic:K or ratio:R (empty: the daemon's default, ratio:0.15)")
	f.BoolVar(&opts.Keep, "keep", false, "keep the daemon's data directory (disk tier, index journal) for inspection")
	f.BoolVar(&verbose, "verbose", false, "show the daemon's logs on stderr")
	return cmd
}
