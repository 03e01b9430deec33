package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
)

func newEvictCmd() *cobra.Command {
	var (
		pc     promptCmd
		shared bool
	)
	cmd := &cobra.Command{
		Use:   "evict",
		Short: "drop a prompt's stored KV (the tenant's own prefix chains and chunks) from kvloomd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pc.callPrompt(cmd, func(ctx context.Context, c api.KVLoomClient, toks []uint32) error {
				r, err := c.Evict(ctx, &api.EvictRequest{Tenant: pc.tenant, Model: pc.model, Tokens: toks, Shared: shared})
				if err != nil {
					return err
				}
				if pc.asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "evicted %d index entries, %d chunks\n", r.Entries, r.Chunks)
				return err
			})
		},
	}
	pc.bind(cmd)
	cmd.Flags().BoolVar(&shared, "shared", false, "evict the model's shared content instead of the tenant's")
	return cmd
}
