package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/sim/topology"
	"github.com/kvloom/kvloom/sim/tune"
)

func newTuneCmd() *cobra.Command {
	var (
		topoPath, tracePath, workload, objective, policy, outPath string
		speed                                                     float64
		head, blockTokens                                         int
		asJSON                                                    bool
		o                                                         tune.Options
	)
	cmd := &cobra.Command{
		Use:   "tune",
		Short: "search kvloomd's parameters for a topology and workload with the simulator",
		Long: `tune searches chunk size, prefetch depth, accelerator table entries, the NIC each GPU
loads through (from the topology's PCIe distances), the DRAM given to KV, the recompute
budget and the stored-KV codec, by simulating the workload on the topology (successive
halving over random configurations, then coordinate descent). It prints the best
configuration, the top five with their metrics and each knob's sensitivity, and with
--out writes kvloomd's YAML configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topoPath == "" {
				return fmt.Errorf("--topology is required: %w", errUsage)
			}
			obj, err := tune.ParseObjective(objective)
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			o.Objective = obj
			if o.Policy, err = sim.ParsePolicy(policy); err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			top, err := topology.ReadFile(topoPath)
			if err != nil {
				return err
			}
			w, err := loadWorkload(workloadFlags{kind: workload, trace: tracePath, blockTokens: blockTokens, seed: o.Seed})
			if err != nil {
				return err
			}
			w = w.Head(head).Speed(speed)
			start := time.Now()
			res, err := tune.Tune(top, w, o)
			if err != nil {
				if errors.Is(err, tune.ErrTune) || errors.Is(err, sim.ErrConfig) || errors.Is(err, sim.ErrUnknownModel) {
					return fmt.Errorf("%w: %w", err, errUsage)
				}
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "tuned in %v: %.1f simulation runs searching, %d for the sensitivity sweep\n",
				time.Since(start).Round(time.Millisecond), res.Runs, res.SweepRuns)
			if outPath != "" {
				cfg := tune.DaemonConfigFor(top, res.Best.Knobs, res.NICMap())
				header := fmt.Sprintf("kvloomd configuration written by kvloom tune\ntopology %s, workload %s (%d requests), objective %s = %.4g for policy %s",
					topoPath, w.Name, len(w.Requests), res.Objective, res.Best.Score, res.Policy)
				data, err := cfg.Marshal(header)
				if err != nil {
					return err
				}
				if err := os.WriteFile(outPath, data, 0o644); err != nil {
					return fmt.Errorf("write %s: %w", outPath, err)
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			return writeTune(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&topoPath, "topology", "", "topology file (docs/topology.md)")
	f.StringVar(&workload, "workload", "trace", "workload: trace (needs --trace), chat or rag")
	f.StringVar(&tracePath, "trace", "", "Mooncake-format trace")
	f.IntVar(&blockTokens, "block-tokens", 512, "tokens per trace hash id")
	f.Float64Var(&speed, "speed", 1, "replay speed factor")
	f.IntVar(&head, "requests", 0, "use only the first N requests (0: all)")
	f.StringVar(&objective, "objective", "p99-ttft", "p99-ttft, throughput (prompt tokens per GPU-second) or cost (dollars per million prompt tokens)")
	f.IntVar(&o.Budget, "budget", 30, "search budget in full-workload simulations")
	f.StringVar(&policy, "policy", string(sim.PolicyInNetBlend), "the policy being configured")
	f.StringVar(&o.Model, "model", "llama-3-70b", "model preset")
	f.IntVar(&o.TP, "tp", 0, "tensor-parallel degree (0: smallest that fits)")
	f.StringVar(&o.DType, "dtype", "bf16", "compute dtype")
	f.Uint64Var(&o.Seed, "seed", 1, "search seed")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.StringVar(&outPath, "out", "", "write the best configuration as kvloomd YAML to this file")
	return cmd
}

func writeTune(w io.Writer, r *tune.Result) error {
	fmt.Fprintf(w, "objective %s for %s; search: %s\n\n", r.Objective, r.Policy, r.Search)
	knobs := func(k tune.Knobs) string {
		return fmt.Sprintf("chunk %d, depth %d, table %d, nic %s, mem %.3g, recompute %.2g, codec %s",
			k.ChunkTokens, k.PrefetchDepth, k.TableEntries, k.NICAssignment, k.MemFraction, k.RecomputeRatio, sim.CompressionName(k.Compression))
	}
	fmt.Fprintf(w, "best      %.4g  (%s)\n", r.Best.Score, knobs(r.Best.Knobs))
	fmt.Fprintf(w, "defaults  %.4g  (%s)\n\n", r.Baseline.Score, knobs(r.Baseline.Knobs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "rank\tobjective\tp50 ms\tp99 ms\thit\ttokens/GPU-s\t$/M tokens\tknobs")
	for i, c := range r.Top {
		m := c.Metrics
		fmt.Fprintf(tw, "%d\t%.4g\t%.1f\t%.1f\t%.1f%%\t%.0f\t%.4f\t%s\n", i+1, c.Score, m.P50MS, m.P99MS, 100*m.HitRatio, m.TokensPerGPUS, m.DollarsPerMTokens, knobs(c.Knobs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nsensitivity (objective along each knob, others at best; spread = (worst−best)/best):")
	for _, s := range r.Sensitivity {
		parts := make([]string, len(s.Points))
		for i, p := range s.Points {
			parts[i] = fmt.Sprintf("%s=%.4g", p.Value, p.Score)
		}
		fmt.Fprintf(w, "  %-16s spread %6.1f%%  best %-14s %s\n", s.Knob, 100*s.Spread, s.Best, strings.Join(parts, " "))
	}
	return nil
}
