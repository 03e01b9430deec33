package sim

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is the outcome of Run: one PolicyReport per policy, all on the
// same arrivals. It holds no wall-clock figures, so that equal inputs give
// equal reports.
type Report struct {
	Topology        string         `json:"topology"`
	Workload        string         `json:"workload"`
	Model           string         `json:"model"`
	GPU             string         `json:"gpu"`
	TP              int            `json:"tp"`
	DType           string         `json:"dtype"`
	Instances       int            `json:"instances"`
	Requests        int            `json:"requests"`
	PromptTokens    int64          `json:"prompt_tokens"`
	KVBytesPerToken int            `json:"kv_bytes_per_token"`
	ChunkTokens     int            `json:"chunk_tokens"`
	PrefetchDepth   int            `json:"prefetch_depth"`
	RecomputeRatio  float64        `json:"recompute_ratio"`
	Compression     string         `json:"compression"`
	MemFraction     float64        `json:"mem_fraction"`
	NICAssignment   []NICUse       `json:"nic_assignment"`
	Events          uint64         `json:"events"`
	Policies        []PolicyReport `json:"policies"`
}

// NICUse says which NIC an instance's loads use, and how far it is.
type NICUse struct {
	Instance string `json:"instance"`
	NIC      string `json:"nic"`
	Distance string `json:"distance"`
}

// Dist summarises a distribution of milliseconds.
type Dist struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Mean float64 `json:"mean_ms"`
	Max  float64 `json:"max_ms"`
}

// Speedup compares a policy's TTFT with recompute's (recompute ÷ policy).
type Speedup struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
}

// LinkUse is what one resource carried.
type LinkUse struct {
	Name        string  `json:"name"`
	Kind        string  `json:"kind"`
	Bytes       int64   `json:"bytes"`
	Utilization float64 `json:"utilization"` // busy time ÷ makespan
}

// PolicyReport is one policy's outcome.
type PolicyReport struct {
	Policy string `json:"policy"`
	TTFT   Dist   `json:"ttft"`
	// Speedup against recompute on the same arrivals.
	Speedup Speedup `json:"speedup_vs_recompute"`
	// Throughput over the makespan (first arrival to last first token).
	MakespanS      float64 `json:"makespan_s"`
	RequestsPerS   float64 `json:"requests_per_s"`
	PromptTokensPS float64 `json:"prompt_tokens_per_s"`
	// HitRatio is the share of all prompt tokens whose KV came from each
	// tier; Computed the share prefilled; Recomputed the share of reused
	// tokens recomputed by CacheBlend.
	HitRatio     map[string]float64 `json:"hit_ratio"`
	TotalHit     float64            `json:"hit_ratio_total"`
	BlendedRatio float64            `json:"blended_ratio"`
	Computed     float64            `json:"computed_ratio"`
	GPUBusyS     float64            `json:"gpu_busy_s"`
	GPUUtil      float64            `json:"gpu_utilization"`
	DeviceBusyS  float64            `json:"accelerator_busy_s"`
	BytesLoaded  int64              `json:"bytes_loaded"`
	// Where a request's time goes, on average: waiting for its instance,
	// computing, and the GPU stalled waiting for KV to arrive.
	MeanQueueMS   float64   `json:"mean_queue_ms"`
	MeanComputeMS float64   `json:"mean_compute_ms"`
	MeanStallMS   float64   `json:"mean_stall_ms"`
	Links         []LinkUse `json:"links"`

	ttft []float64 // per request, ms, in request order
}

// TTFTs returns the policy's per-request TTFTs in milliseconds, in request
// order.
func (p *PolicyReport) TTFTs() []float64 { return p.ttft }

func (p *policyRun) report() PolicyReport {
	out := PolicyReport{Policy: string(p.pol), HitRatio: map[string]float64{}}
	n := len(p.reqs)
	out.ttft = make([]float64, n)
	var first, last int64 = math.MaxInt64, 0
	var from [numSources]int64
	var blended, total int64
	for i := range p.reqs {
		st := &p.reqs[i]
		r := &p.w.Requests[i]
		out.ttft[i] = float64(st.finish-int64(r.Arrival)) / 1e6
		first = min(first, int64(r.Arrival))
		last = max(last, st.finish)
		for k := range numSources {
			from[k] += int64(st.fromTok[k])
		}
		blended += int64(st.blendTok)
		total += int64(r.Tokens)
		out.BytesLoaded += int64(float64(st.loadedRaw) * p.ratio)
		out.MeanQueueMS += float64(st.start-max(st.enqueued, int64(r.Arrival))) / 1e6
		out.MeanComputeMS += float64(st.compute) / 1e6
		out.MeanStallMS += float64(st.finish-st.start-st.compute) / 1e6
	}
	out.MeanQueueMS /= float64(n)
	out.MeanComputeMS /= float64(n)
	out.MeanStallMS /= float64(n)
	out.TTFT = summarise(out.ttft)
	makespan := float64(last-first) / 1e9
	out.MakespanS = makespan
	if makespan > 0 {
		out.RequestsPerS = float64(n) / makespan
		out.PromptTokensPS = float64(total) / makespan
	}
	var hit int64
	for k := range numSources {
		if from[k] > 0 {
			out.HitRatio[sourceNames[k]] = float64(from[k]) / float64(total)
			hit += from[k]
		}
	}
	out.TotalHit = float64(hit) / float64(total)
	out.BlendedRatio = float64(blended) / float64(total)
	out.Computed = 1 - out.TotalHit
	var busy int64
	for _, is := range p.insts {
		busy += is.busyNs
	}
	out.GPUBusyS = float64(busy) / 1e9 * float64(p.c.insts[0].eng.TP)
	if last > 0 {
		out.GPUUtil = float64(busy) / (float64(last) * float64(len(p.insts)))
	}
	out.DeviceBusyS = float64(p.deviceNs) / 1e9
	for _, r := range p.c.res {
		if r.bytes == 0 {
			continue
		}
		u := LinkUse{Name: r.name, Kind: r.kind, Bytes: r.bytes}
		if last > 0 {
			u.Utilization = float64(r.busy) / float64(last)
		}
		out.Links = append(out.Links, u)
	}
	slices.SortFunc(out.Links, func(a, b LinkUse) int {
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func summarise(ms []float64) Dist {
	if len(ms) == 0 {
		return Dist{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Dist{
		P50: percentile(s, 50), P90: percentile(s, 90), P99: percentile(s, 99),
		Mean: sum / float64(len(s)), Max: s[len(s)-1],
	}
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func (r *Report) computeSpeedups() {
	var base *PolicyReport
	for i := range r.Policies {
		if r.Policies[i].Policy == string(PolicyRecompute) {
			base = &r.Policies[i]
		}
	}
	if base == nil {
		return
	}
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	for i := range r.Policies {
		p := &r.Policies[i]
		p.Speedup = Speedup{
			P50:  ratio(base.TTFT.P50, p.TTFT.P50),
			P90:  ratio(base.TTFT.P90, p.TTFT.P90),
			P99:  ratio(base.TTFT.P99, p.TTFT.P99),
			Mean: ratio(base.TTFT.Mean, p.TTFT.Mean),
		}
	}
}

// Policy returns the report of one policy.
func (r *Report) Policy(name Policy) (*PolicyReport, bool) {
	for i := range r.Policies {
		if r.Policies[i].Policy == string(name) {
			return &r.Policies[i], true
		}
	}
	return nil, false
}

// WriteText writes the report as tables for a terminal; topLinks bounds
// the busiest links shown per policy.
func (r *Report) WriteText(w io.Writer, topLinks int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "topology %s, workload %s: %d requests, %d prompt tokens\n", r.Topology, r.Workload, r.Requests, r.PromptTokens)
	fmt.Fprintf(w, "model %s on %s, TP %d (%s): %d instances; chunk %d tokens, prefetch depth %d, recompute %.2f, compression %s\n\n",
		r.Model, r.GPU, r.TP, r.DType, r.Instances, r.ChunkTokens, r.PrefetchDepth, r.RecomputeRatio, r.Compression)
	fmt.Fprintln(tw, "policy\tTTFT p50 ms\tp90 ms\tp99 ms\tspeedup p50\tp99\treq/s\thit ratio\tblended\tGPU util\tloaded GB\tqueue ms\tcompute ms\tstall ms\t")
	for _, p := range r.Policies {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.2f×\t%.2f×\t%.2f\t%.1f%%\t%.1f%%\t%.1f%%\t%.1f\t%.1f\t%.1f\t%.1f\t\n",
			p.Policy, p.TTFT.P50, p.TTFT.P90, p.TTFT.P99, p.Speedup.P50, p.Speedup.P99, p.RequestsPerS,
			100*p.TotalHit, 100*p.BlendedRatio, 100*p.GPUUtil, float64(p.BytesLoaded)/1e9,
			p.MeanQueueMS, p.MeanComputeMS, p.MeanStallMS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\ntoken hit ratio by tier:")
	for _, p := range r.Policies {
		keys := make([]string, 0, len(p.HitRatio))
		for k := range p.HitRatio {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return slices.Index(sourceNames[:], a) - slices.Index(sourceNames[:], b) })
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", k, 100*p.HitRatio[k]))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(w, "  %-13s %s\n", p.Policy, strings.Join(parts, ", "))
	}
	if topLinks > 0 {
		fmt.Fprintf(w, "\nbusiest links (bytes, utilisation):\n")
		for _, p := range r.Policies {
			if len(p.Links) == 0 {
				continue
			}
			fmt.Fprintf(w, "  %s:\n", p.Policy)
			for _, l := range p.Links[:min(topLinks, len(p.Links))] {
				fmt.Fprintf(w, "    %-48s %10.2f GB  %5.1f%%\n", l.Name, float64(l.Bytes)/1e9, 100*l.Utilization)
			}
		}
	}
	return nil
}
