package main

import (
	"github.com/kvloom/kvloom/internal/workload"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var opts workload.DemoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run the matcher on a real RAG workload built from the Go documentation (what make demo runs)",
		Long: `demo tokenizes the Go distribution's documentation with cl100k_base, indexes
it, generates RAG prompts (a shared system prompt, 3-8 documents drawn with
Zipf popularity, a question) and multi-turn chats for two tenants, and
reports what the matcher found: reuse, whether every retrieved document was
found, tenant isolation, the hot substrings nobody marked, and throughput.
It needs no configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := workload.RunDemo(cmd.Context(), cmd.OutOrStdout(), opts)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Prompts, "prompts", 0, "number of RAG prompts (0: 200)")
	f.Uint64Var(&opts.Seed, "seed", 0, "seed of every random choice (0: 1)")
	f.StringVar(&opts.CacheDir, "cache-dir", workload.DefaultCacheDir(), "directory for token caches (empty: none)")
	return cmd
}
