package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
)

func newLookupCmd() *cobra.Command {
	var pc promptCmd
	cmd := &cobra.Command{
		Use:   "lookup",
		Short: "ask kvloomd how much of a prompt is reusable and where, without loading anything",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pc.callPrompt(cmd, func(ctx context.Context, c api.KVLoomClient, toks []uint32) error {
				r, err := c.Lookup(ctx, &api.LookupRequest{Tenant: pc.tenant, Model: pc.model, Tokens: toks})
				if err != nil {
					return err
				}
				if pc.asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reusable: %d of %d tokens (prefix %d)\n", r.ReusableTokens, r.PromptTokens, r.PrefixTokens)
				return printRanges(cmd.OutOrStdout(), r.Ranges)
			})
		},
	}
	pc.bind(cmd)
	return cmd
}

func printRanges(w io.Writer, rs []*api.Range) error {
	if len(rs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tTOKENS\tKIND\tSOURCE\tWHERE\tDEVICE\tCHUNK")
	for _, r := range rs {
		kind := "chunk"
		if r.Prefix {
			kind = "prefix"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%v\t%s\n", r.Start, r.Length, kind, r.Source, r.Where, r.Device, r.Chunk)
	}
	return tw.Flush()
}
