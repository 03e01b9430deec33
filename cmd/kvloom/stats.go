package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
)

func newStatsCmd() *cobra.Command {
	var df daemonFlags
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "show kvloomd's counters: requests, reuse, tiers, write-back, and the control loop's hot set",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return df.call(cmd, func(ctx context.Context, c api.KVLoomClient) error {
				st, err := c.Stats(ctx, &api.StatsRequest{})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if df.asJSON {
					return printJSON(out, st)
				}
				reuse := 0.0
				if st.PromptTokens > 0 {
					reuse = 100 * float64(st.ReusedTokens) / float64(st.PromptTokens)
				}
				fmt.Fprintf(out, "requests: %d prepare (%d partial), %d lookup, %d store\n", st.Prepares, st.PartialPrepares, st.Lookups, st.Stores)
				fmt.Fprintf(out, "reuse: %d of %d prompt tokens (%.1f%%)\n", st.ReusedTokens, st.PromptTokens, reuse)
				fmt.Fprintf(out, "index: %d entries, %d tokens; segments: %d (%d bytes)\n", st.IndexEntries, st.IndexTokens, st.Segments, st.SegmentBytes)
				fmt.Fprintf(out, "write-back: %d queued, %d rejected\n", st.WritebackQueued, st.WritebackRejects)
				fmt.Fprintf(out, "peers: %d chunks promoted to local tiers, %d refused (queue full); %d planned chunks dropped mid-load\n",
					st.PeerPromotions, st.PeerPromotionRejects, st.DroppedChunks)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIER\tHITS\tMISSES\tREAD\tWRITTEN")
				for _, t := range st.Tiers {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", t.Tier, t.Hits, t.Misses, t.BytesRead, t.BytesWritten)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				ctl := st.Control
				if ctl == nil {
					return nil
				}
				fmt.Fprintf(out, "control: %d rounds, device table %d/%d, pushed %d adds %d removes, %d rejected, %d hot candidates\n",
					ctl.Rounds, ctl.TableEntries, ctl.TableCapacity, ctl.PushedAdds, ctl.PushedRemoves, ctl.Rejected, ctl.HotCandidates)
				fmt.Fprintf(out, "control: %d hot spans materialised as chunks (%d tokens), %d failed\n", ctl.Materialized, ctl.MaterializedTokens, ctl.MaterializeFailures)
				if ctl.LastError != "" {
					fmt.Fprintf(out, "control: last push failed: %s\n", ctl.LastError)
				}
				tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOT ENTRY\tKIND\tTOKENS\tBENEFIT(s)\tON DEVICE\tPINNED")
				for _, h := range ctl.Top {
					kind := "chunk"
					if h.Prefix {
						kind = "prefix"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%.3g\t%v\t%v\n", h.Chunk, kind, h.Tokens, h.Benefit, h.OnDevice, h.Pinned)
				}
				return tw.Flush()
			})
		},
	}
	df.bind(cmd)
	return cmd
}
