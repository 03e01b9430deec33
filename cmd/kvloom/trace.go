package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/store/evict"
)

func newTraceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "work with request traces (Mooncake format)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newTraceReplayCmd())
	return cmd
}

// replayRow is one capacity of a replay: the policy next to LRU, same run.
type replayRow struct {
	Capacity int64                `json:"capacity_blocks"`
	Policy   evict.ReplayResult   `json:"policy"`
	LRU      evict.ReplayResult   `json:"lru"`
	Others   []evict.ReplayResult `json:"others,omitempty"`
	// VsLRU is the policy's token hit ratio minus LRU's.
	VsLRU float64 `json:"vs_lru"`
}

type replayReport struct {
	Trace       string      `json:"trace"`
	Requests    int         `json:"requests"`
	BlockTokens int         `json:"block_tokens"`
	Results     []replayRow `json:"results"`
}

func newTraceReplayCmd() *cobra.Command {
	var (
		path       string
		capacities []int64
		policy     string
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "replay --trace FILE [--capacity N]... [--policy P|all] [--json]",
		Short: "replay a trace against the memory tier's eviction policy and LRU; report token hit ratios",
		Long: `replay runs a Mooncake-format trace (one JSON object a line with hash_ids,
one id per 512-token block) through an eviction policy with prefix-cache
semantics at each capacity (in blocks), and LRU in the same run: each
request reuses its longest cached prefix of blocks and inserts the rest.
--policy all also reports every other policy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("--trace is required: %w", errUsage)
			}
			if len(capacities) == 0 {
				return fmt.Errorf("--capacity needs at least one value: %w", errUsage)
			}
			for _, c := range capacities {
				if c <= 0 {
					return fmt.Errorf("--capacity %d: want a positive number of blocks: %w", c, errUsage)
				}
			}
			main, others := policy, []string(nil)
			if policy == "all" {
				main = evict.DefaultPolicy
				for _, n := range evict.Names() {
					if n != main && n != evict.LRU {
						others = append(others, n)
					}
				}
			}
			if _, err := evict.New[uint64](main, 1, evict.Options[uint64]{Hash: evict.HashID}); err != nil {
				return fmt.Errorf("--policy: %w: %w", err, errUsage)
			}
			tr, err := readReplayTrace(path)
			if err != nil {
				return err
			}
			rep := replayReport{Trace: path, Requests: len(tr.Requests), BlockTokens: tr.BlockTokens}
			for _, c := range capacities {
				if err := cmd.Context().Err(); err != nil {
					return err
				}
				row := replayRow{Capacity: c}
				if row.Policy, err = evict.ReplayPolicy(tr, main, c); err != nil {
					return err
				}
				if row.LRU, err = evict.ReplayPolicy(tr, evict.LRU, c); err != nil {
					return err
				}
				for _, o := range others {
					r, err := evict.ReplayPolicy(tr, o, c)
					if err != nil {
						return err
					}
					row.Others = append(row.Others, r)
				}
				row.VsLRU = row.Policy.TokenHitRatio - row.LRU.TokenHitRatio
				rep.Results = append(rep.Results, row)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return printReplay(cmd, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "trace", "", "trace file in the Mooncake format (e.g. ../shared/testdata/traces/mooncake_conversation_trace.jsonl)")
	f.Int64SliceVar(&capacities, "capacity", []int64{1000, 10000, 50000}, "cache capacity in blocks (repeat or comma-separate for several)")
	f.StringVar(&policy, "policy", evict.DefaultPolicy, fmt.Sprintf("eviction policy: %v, or all", evict.Names()))
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// readReplayTrace reads a Mooncake-format trace with sim's reader, the
// project's one trace parser, and hands evict its requests as plain block
// ids.
func readReplayTrace(path string) (*evict.Trace, error) {
	w, err := sim.ReadMooncakeFile(path, sim.MooncakeBlockTokens)
	if err != nil {
		return nil, err
	}
	tr := &evict.Trace{Name: path, BlockTokens: sim.MooncakeBlockTokens, Requests: make([]evict.Request, len(w.Requests))}
	for i := range w.Requests {
		r := &w.Requests[i]
		ids := make([]uint64, len(r.Blocks))
		for j, b := range r.Blocks {
			ids[j] = b.ID
		}
		tr.Requests[i] = evict.Request{Timestamp: float64(r.Arrival) / float64(time.Millisecond),
			InputLength: int(r.Tokens), OutputLength: int(r.Output), Blocks: ids}
	}
	return tr, nil
}

func printReplay(cmd *cobra.Command, rep replayReport) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "trace %s: %d requests, %d-token blocks\n", rep.Trace, rep.Requests, rep.BlockTokens)
	fmt.Fprintln(w, "capacity\tpolicy\ttoken hit ratio\tlru\tvs lru\tevictions")
	for _, r := range rep.Results {
		fmt.Fprintf(w, "%d\t%s\t%.4f\t%.4f\t%+.4f\t%d\n", r.Capacity, r.Policy.Policy, r.Policy.TokenHitRatio, r.LRU.TokenHitRatio, r.VsLRU, r.Policy.Evictions)
		for _, o := range r.Others {
			fmt.Fprintf(w, "\t%s\t%.4f\t\t%+.4f\t%d\n", o.Policy, o.TokenHitRatio, o.TokenHitRatio-r.LRU.TokenHitRatio, o.Evictions)
		}
	}
	return w.Flush()
}
