package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
)

func newEvictCmd() *cobra.Command {
	var (
		df     daemonFlags
		pf     promptFlags
		shared bool
	)
	cmd := &cobra.Command{
		Use:   "evict",
		Short: "drop a prompt's stored KV (the tenant's own prefix chains and chunks) from kvloomd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			toks, err := pf.read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			return df.call(cmd, func(ctx context.Context, c api.KVLoomClient) error {
				r, err := c.Evict(ctx, &api.EvictRequest{Tenant: pf.tenant, Model: pf.model, Tokens: toks, Shared: shared})
				if err != nil {
					return err
				}
				if df.asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "evicted %d index entries, %d chunks\n", r.Entries, r.Chunks)
				return err
			})
		},
	}
	df.bind(cmd)
	pf.bind(cmd)
	cmd.Flags().BoolVar(&shared, "shared", false, "evict the model's shared content instead of the tenant's")
	return cmd
}
