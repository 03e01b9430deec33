package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
)

func newStatusCmd() *cobra.Command {
	var df daemonFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show whether kvloomd serves and which of its backends (device, DMA, tiers, peers) work",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return df.call(cmd, func(ctx context.Context, c api.KVLoomClient) error {
				st, err := c.Status(ctx, &api.StatusRequest{})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if df.asJSON {
					return printJSON(out, st)
				}
				state := "serving"
				if !st.Serving {
					state = "shutting down"
				}
				fmt.Fprintf(out, "kvloomd %s, %s, up %s\n", st.Version, state, time.Since(time.Unix(0, st.StartedUnixNs)).Round(time.Second))
				fmt.Fprintf(out, "models: %d\n", len(st.Models))
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BACKEND\tKIND\tSTATE\tREASON")
				for _, b := range st.Backends {
					s := "up"
					if !b.Up {
						s = "DOWN"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Name, b.Kind, s, b.Reason)
				}
				return tw.Flush()
			})
		},
	}
	df.bind(cmd)
	return cmd
}
