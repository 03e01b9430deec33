package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/sim/topology"
)

func newSimCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "simulate KV reuse: one request analytically, or a cluster over time",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSimEstimateCmd(), newSimRunCmd())
	return cmd
}

func newSimEstimateCmd() *cobra.Command {
	var (
		model, gpu, dtype, from string
		tp, tokens, reused      int
		chunk                   int
		recompute, gbps         float64
		asJSON                  bool
	)
	cmd := &cobra.Command{
		Use:   "estimate",
		Short: "does loading stored KV beat recomputing it? one request, analytically",
		Long: `estimate prints, for one prompt on one engine, the full-prefill time, the time to
load the reused KV from a tier, the time to compute the rest, and the TTFT with loading
and recompute overlapped layer by layer (CacheBlend), with the speedup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("load-from") && cmd.Flags().Changed("load-gbps") {
				return fmt.Errorf("--load-from and --load-gbps exclude each other: %w", errUsage)
			}
			m, err := sim.LookupModel(model)
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			g, err := sim.LookupGPU(gpu)
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			eng, err := sim.NewEngine(m, g, sim.EngineOptions{TP: tp, DType: dtype})
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			est, err := eng.Estimate(sim.EstimateInput{
				Tokens: tokens, Reused: reused, Recompute: recompute,
				LoadFrom: from, LoadGbps: gbps, ChunkTokens: chunk,
			})
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, est)
			}
			return writeEstimate(out, est)
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "llama-3-8b", "model preset (kvcache presets: "+strings.Join(kvcache.PresetNames(), ", ")+")")
	f.StringVar(&gpu, "gpu", "H100-SXM", "GPU preset ("+strings.Join(topology.GPUPresetNames(), ", ")+")")
	f.IntVar(&tp, "tp", 1, "tensor-parallel degree")
	f.StringVar(&dtype, "dtype", "bf16", "compute and weight dtype: bf16, fp16 or fp8")
	f.IntVar(&tokens, "tokens", 8192, "prompt length in tokens")
	f.IntVar(&reused, "reused", 0, "tokens whose KV is stored")
	f.Float64Var(&recompute, "recompute", 0, "fraction of the reused tokens recomputed (CacheBlend; 0 for prefix reuse)")
	srcs := sim.LoadSourceNames()
	f.StringVar(&from, "load-from", "dram", "where the KV is: "+strings.Join(srcs[:len(srcs)-1], ", ")+" or "+srcs[len(srcs)-1])
	f.Float64Var(&gbps, "load-gbps", 0, "load over a channel of this many Gbit/s instead of --load-from")
	f.IntVar(&chunk, "chunk", 256, "tokens per stored chunk (one message each)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeEstimate(w io.Writer, e sim.Estimate) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s on %d× %s (%s)\n", e.Model, e.TP, e.GPU, e.DType)
	fmt.Fprintf(tw, "prompt\t%d tokens, %d reused (%d recomputed), %d computed\n", e.Tokens, e.Reused, e.Blended, e.Computed)
	fmt.Fprintf(tw, "load\t%.2f GB from %s over %s at %.1f Gbit/s\n", float64(e.LoadBytes)/1e9, e.LoadFrom, e.LoadPath, e.LoadGbps)
	fmt.Fprintf(tw, "prefill_ms\t%.2f\n", e.PrefillMS)
	fmt.Fprintf(tw, "load_ms\t%.2f\n", e.LoadMS)
	fmt.Fprintf(tw, "recompute_ms\t%.2f\n", e.RecomputeMS)
	fmt.Fprintf(tw, "ttft_full_ms\t%.2f\n", e.TTFTFullMS)
	fmt.Fprintf(tw, "ttft_reuse_ms\t%.2f\t(%s-bound, layer-by-layer overlap)\n", e.TTFTReuseMS, e.Bound)
	fmt.Fprintf(tw, "speedup\t%.2f×\n", e.Speedup)
	if e.BreakevenGbps > 0 {
		fmt.Fprintf(tw, "breakeven\tloading wins above %.1f Gbit/s\n", e.BreakevenGbps)
	} else if e.Reused > 0 {
		fmt.Fprintf(tw, "breakeven\tno load bandwidth beats recomputing here\n")
	}
	return tw.Flush()
}

func newSimRunCmd() *cobra.Command {
	var (
		topoPath, tracePath, workload, policies string
		plotPath, timelinePath                  string
		speed, rate, zipf                       float64
		head, blockTokens, sessions, docs       int
		timelineRequests, links                 int
		seed                                    uint64
		asJSON                                  bool
		o                                       sim.RunOptions
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "simulate a cluster serving a workload under every KV policy",
		Long: `run replays a workload (the Mooncake trace format at its timestamps, or a generated
multi-turn chat or RAG workload) on a topology file under the policies recompute,
gpu-prefix, host-offload, innet and innet-blend, on the same arrivals, and reports TTFT
percentiles, throughput, token hit ratio by tier, bytes and utilisation per link, GPU
busy time and speedups against recompute. The output is deterministic for the same
inputs and seed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topoPath == "" {
				return fmt.Errorf("--topology is required: %w", errUsage)
			}
			top, err := topology.ReadFile(topoPath)
			if err != nil {
				return err
			}
			w, err := loadWorkload(workloadFlags{kind: workload, trace: tracePath, blockTokens: blockTokens,
				seed: seed, rate: rate, zipf: zipf, sessions: sessions, docs: docs})
			if err != nil {
				return err
			}
			w = w.Head(head).Speed(speed)
			if policies != "" {
				for _, name := range strings.Split(policies, ",") {
					p, err := sim.ParsePolicy(strings.TrimSpace(name))
					if err != nil {
						return fmt.Errorf("%w: %w", err, errUsage)
					}
					o.Policies = append(o.Policies, p)
				}
				if !slices.Contains(o.Policies, sim.PolicyRecompute) {
					o.Policies = append([]sim.Policy{sim.PolicyRecompute}, o.Policies...)
				}
			}
			if timelinePath != "" {
				o.Timeline = sim.NewTimeline(timelineRequests)
			}
			start := time.Now()
			rep, err := sim.Run(top, w, o)
			if err != nil {
				if errors.Is(err, sim.ErrConfig) || errors.Is(err, sim.ErrUnknownModel) {
					return fmt.Errorf("%w: %w", err, errUsage)
				}
				return err
			}
			elapsed := time.Since(start)
			fmt.Fprintf(cmd.ErrOrStderr(), "simulated %d requests × %d policies (%d events) in %v, %.2fM events/s\n",
				rep.Requests, len(rep.Policies), rep.Events, elapsed.Round(time.Millisecond), float64(rep.Events)/elapsed.Seconds()/1e6)
			if plotPath != "" {
				if err := writeFile(plotPath, func(f io.Writer) error {
					format, err := sim.PlotFormat(plotPath)
					if err != nil {
						return err
					}
					return sim.PlotTTFT(f, rep, format)
				}); err != nil {
					return err
				}
			}
			if o.Timeline != nil {
				if err := writeFile(timelinePath, o.Timeline.WriteJSON); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return rep.WriteText(cmd.OutOrStdout(), links)
		},
	}
	f := cmd.Flags()
	f.StringVar(&topoPath, "topology", "", "topology file (docs/topology.md), e.g. examples/topologies/rack4-2storage.yaml")
	f.StringVar(&workload, "workload", "trace", "workload: trace (needs --trace), chat or rag")
	f.StringVar(&tracePath, "trace", "", "Mooncake-format trace (JSONL with timestamp, input_length, output_length, hash_ids)")
	f.IntVar(&blockTokens, "block-tokens", 512, "tokens per trace hash id, or per generated block")
	f.Float64Var(&speed, "speed", 1, "replay speed factor (2 = arrivals twice as fast)")
	f.IntVar(&head, "requests", 0, "use only the first N requests (0: all)")
	f.Uint64Var(&seed, "seed", 1, "seed of the chat and RAG generators")
	f.Float64Var(&rate, "rate", 0, "generator arrival rate: conversations/s (chat) or requests/s (rag); 0 = default")
	f.IntVar(&sessions, "sessions", 0, "chat: conversations (0 = 200); rag: requests (0 = 2000)")
	f.IntVar(&docs, "docs", 0, "rag: corpus size (0 = 1000)")
	f.Float64Var(&zipf, "zipf", 0, "rag: Zipf exponent of document popularity, > 1 (0 = 1.1)")
	f.StringVar(&o.Model, "model", "llama-3-70b", "model preset")
	f.IntVar(&o.TP, "tp", 0, "tensor-parallel degree per instance (0: smallest that fits)")
	f.StringVar(&o.DType, "dtype", "bf16", "compute dtype: bf16, fp16 or fp8")
	f.StringVar(&policies, "policies", "", "comma-separated policies (default all; recompute is always included)")
	f.IntVar(&o.ChunkTokens, "chunk", 256, "storage and transfer chunk, tokens")
	f.IntVar(&o.PrefetchDepth, "prefetch-depth", 8, "chunk reads in flight per transfer")
	f.IntVar(&o.TableEntries, "table-entries", 0, "accelerator table entries (0: the topology's or the default)")
	f.Float64Var(&o.RecomputeRatio, "recompute", 0.15, "innet-blend recompute budget")
	f.IntVar(&o.Compression, "compression", 0, "stored KV compression: 0 raw, 1 fp8, 2 CacheGen-like")
	f.Float64Var(&o.MemFraction, "mem-fraction", 1, "fraction of each host DRAM tier given to KV")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&plotPath, "plot", "", "write the TTFT distributions to this .svg or .png file")
	f.StringVar(&timelinePath, "timeline", "", "write a Chrome/Perfetto trace of the first requests to this file")
	f.IntVar(&timelineRequests, "timeline-requests", 50, "requests the timeline records")
	f.IntVar(&links, "links", 5, "busiest links shown per policy in the text report")
	return cmd
}

// workloadFlags are the flags that choose and shape a workload; zero
// generator fields take the generators' defaults.
type workloadFlags struct {
	kind, trace string
	blockTokens int
	seed        uint64
	rate, zipf  float64
	sessions    int // chat conversations, or RAG requests
	docs        int
}

func loadWorkload(f workloadFlags) (*sim.Workload, error) {
	switch f.kind {
	case "trace":
		if f.trace == "" {
			return nil, fmt.Errorf("--workload trace needs --trace FILE: %w", errUsage)
		}
		return sim.ReadMooncakeFile(f.trace, f.blockTokens)
	case "chat":
		return sim.Chat(sim.ChatOptions{Sessions: f.sessions, SessionRate: f.rate, BlockTokens: f.blockTokens, Seed: f.seed})
	case "rag":
		return sim.RAG(sim.RAGOptions{Requests: f.sessions, Rate: f.rate, Documents: f.docs, Zipf: f.zipf, BlockTokens: f.blockTokens, Seed: f.seed})
	}
	return nil, fmt.Errorf("workload %q, want trace, chat or rag: %w", f.kind, errUsage)
}

// writeFile writes a file through fn, reporting the first error of
// writing or closing.
func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
