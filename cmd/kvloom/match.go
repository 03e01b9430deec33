package main

import (
	"errors"
	"fmt"

	"github.com/kvloom/kvloom/internal/workload"
	"github.com/kvloom/kvloom/matcher"
	"github.com/spf13/cobra"
)

func newMatchCmd() *cobra.Command {
	var opts workload.MatchOptions
	cmd := &cobra.Command{
		Use:   "match --docs DIR --prompts FILE [--json]",
		Short: "index documents and report, per prompt, the reusable matches, the cover and the reused fraction",
		Long: `match tokenizes every file under --docs with cl100k_base and indexes it as a
position-independent chunk (and every --prefix file as a prefix chain), then
matches each prompt of --prompts and reports its matches, the cover (the
non-overlapping matches that reuse the most tokens) and the reused fraction.

The prompts file is JSON Lines, one prompt per line:
  {"id": "q1", "text": "..."}          text, tokenized with cl100k_base
  {"id": "q2", "tokens": [9906, 1917]}  token ids
"id" is optional; exactly one of "text" and "tokens" is required.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Docs == "" || opts.Prompts == "" {
				return fmt.Errorf("match needs --docs DIR and --prompts FILE: %w", errUsage)
			}
			err := workload.RunMatch(cmd.Context(), cmd.OutOrStdout(), opts)
			if errors.Is(err, matcher.ErrOptions) {
				return fmt.Errorf("%w: %w", errUsage, err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Docs, "docs", "", "directory of documents to index (every file under it)")
	f.StringVar(&opts.Prompts, "prompts", "", "prompts file (JSON Lines, see above)")
	f.StringArrayVar(&opts.Prefixes, "prefix", nil, "file to index as a prefix chain, e.g. a system prompt (repeatable)")
	f.BoolVar(&opts.JSON, "json", false, "write one JSON object instead of text")
	f.IntVar(&opts.Matcher.MinLen, "min-len", 0, "shortest chunk match in tokens (0: 64)")
	f.IntVar(&opts.Matcher.BlockSize, "block-size", 0, "prefix block size in tokens, 16-1024 (0: 256)")
	return cmd
}
