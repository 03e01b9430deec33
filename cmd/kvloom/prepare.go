package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
)

func newPrepareCmd() *cobra.Command {
	var (
		pc        promptCmd
		recompute string
		deadline  time.Duration
		gpu, keep bool
		gpuOnly   bool
	)
	cmd := &cobra.Command{
		Use:   "prepare",
		Short: "have kvloomd load a prompt's reusable KV: print the plan and the per-layer readiness",
		Long: `prepare runs Prepare as an engine would: kvloomd matches the prompt, loads the reused
chunks from its tiers and peers under the deadline, stitches them into a shared-memory
segment layer by layer, and reports the plan. The segment is released afterwards
unless --keep is given (it then expires after the daemon's segment_ttl).

With --gpu each layer is also copied to a GPU buffer by the daemon's DMA backend,
stitched straight into its pinned pool (zero copy); --gpu-only skips the host
segment. Chunks the daemon drops mid-load (a later layer failed or came too late)
are listed, and their positions are in the final recompute count.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pc.callPrompt(cmd, func(ctx context.Context, c api.KVLoomClient, toks []uint32) error {
				res, err := hostctl.PrepareAll(ctx, c, &api.PrepareRequest{Tenant: pc.tenant, Model: pc.model, Tokens: toks,
					Recompute: recompute, DeadlineNs: int64(deadline), Gpu: gpu || gpuOnly, GpuOnly: gpuOnly})
				if err != nil {
					return err
				}
				if res.Plan.Kv != nil && !keep {
					if _, err := c.Release(ctx, &api.ReleaseRequest{Handle: res.Plan.Kv.Handle}); err != nil {
						return err
					}
				}
				out := cmd.OutOrStdout()
				if pc.asJSON {
					return printJSON(out, &api.PrepareEvent{Event: &api.PrepareEvent_Plan{Plan: res.Plan}})
				}
				p := res.Plan
				fmt.Fprintf(out, "request %d: reused %d of %d tokens, %d to recompute (policy %s)", p.RequestId, p.ReusedTokens, p.PromptTokens, len(p.Recompute), p.RecomputePolicy)
				if p.Partial {
					fmt.Fprint(out, ", partial (deadline)")
				}
				fmt.Fprintln(out)
				if err := printRanges(out, p.Ranges); err != nil {
					return err
				}
				if p.Kv != nil {
					path := p.Kv.Path
					if path == "" {
						path = "no host copy"
					}
					fmt.Fprintf(out, "segment: %s (%d bytes, %d tokens, %s)\n", path, p.Kv.Size, p.Kv.Tokens, p.Kv.Layout)
					if g := p.Kv.Gpu; g != nil {
						how := "staged (layer larger than the pinned pool)"
						if g.ZeroCopy {
							how = "zero copy from the pinned pool"
						}
						fmt.Fprintf(out, "gpu buffer: %s, %d layers of %d bytes, %s\n", g.Backend, g.Layers, g.LayerBytes, how)
					}
				}
				for _, d := range res.Dropped {
					for _, r := range d.Ranges {
						fmt.Fprintf(out, "dropped at layer %d (%s): [%d, %d) chunk %s, recomputed\n", d.Layer, d.Reason, r.Start, r.Start+r.Length, d.Chunk)
					}
				}
				for _, l := range res.Layers {
					fmt.Fprintf(out, "layer %d ready at %s (gpu %v)\n", l.Layer, time.Duration(l.ElapsedNs), l.OnGpu)
				}
				fmt.Fprintf(out, "done in %s\n", time.Duration(res.Done.ElapsedNs))
				return nil
			})
		},
	}
	pc.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&recompute, "recompute", "", "recompute policy: none, full, epic:K, ratio:R (default: the daemon's)")
	f.DurationVar(&deadline, "deadline", 0, "load deadline (default: the daemon's)")
	f.BoolVar(&gpu, "gpu", false, "also copy the stitched KV to a GPU buffer through the daemon's DMA backend")
	f.BoolVar(&gpuOnly, "gpu-only", false, "the GPU buffer alone, no host segment (implies --gpu)")
	f.BoolVar(&keep, "keep", false, "keep the segment instead of releasing it")
	return cmd
}
