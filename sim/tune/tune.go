package tune

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/sim/topology"
)

// ErrTune marks invalid tuner options.
var ErrTune = errors.New("invalid tuner options")

// Objective is what the tuner minimises or maximises.
type Objective string

// Objectives.
const (
	// ObjP99TTFT minimises the 99th-percentile time to first token.
	ObjP99TTFT Objective = "p99-ttft"
	// ObjThroughput maximises prompt tokens served per GPU-busy second.
	ObjThroughput Objective = "throughput"
	// ObjCost minimises dollars per million prompt tokens: GPU busy hours
	// plus the DRAM given to KV, at Prices.
	ObjCost Objective = "cost"
)

// ParseObjective accepts an objective name.
func ParseObjective(s string) (Objective, error) {
	switch Objective(s) {
	case ObjP99TTFT, ObjThroughput, ObjCost:
		return Objective(s), nil
	}
	return "", fmt.Errorf("objective %q, want p99-ttft, throughput or cost: %w", s, ErrTune)
}

// Prices value resources for ObjCost. Zero fields take the defaults.
type Prices struct {
	GPUHour     float64 // dollars per GPU-hour [2.50]
	DRAMGiBHour float64 // dollars per GiB-hour of DRAM [0.004]
}

// Options configure Tune. Zero values take the defaults in brackets.
type Options struct {
	Model string // [llama-3-70b]
	DType string // [bf16]
	TP    int    // [sim.AutoTP]
	// Policy is the policy being configured [innet-blend].
	Policy    sim.Policy
	Objective Objective // [p99-ttft]
	// Budget is the search's cost in full-workload simulations [30];
	// screening runs on part of the workload count in proportion. The
	// sensitivity sweep around the best configuration comes on top.
	Budget int
	Seed   uint64
	Prices Prices
	Log    *slog.Logger
}

// Knobs are the parameters the tuner searches.
type Knobs struct {
	ChunkTokens    int     `json:"chunk_tokens"`
	PrefetchDepth  int     `json:"prefetch_depth"`
	TableEntries   int     `json:"table_entries"`
	NICAssignment  string  `json:"nic_assignment"`
	MemFraction    float64 `json:"mem_fraction"`
	RecomputeRatio float64 `json:"recompute_ratio"`
	Compression    int     `json:"compression"`
}

// Metrics are a configuration's simulated results.
type Metrics struct {
	P50MS             float64 `json:"ttft_p50_ms"`
	P90MS             float64 `json:"ttft_p90_ms"`
	P99MS             float64 `json:"ttft_p99_ms"`
	HitRatio          float64 `json:"hit_ratio"`
	GPUBusyS          float64 `json:"gpu_busy_s"`
	TokensPerGPUS     float64 `json:"prompt_tokens_per_gpu_s"`
	DollarsPerMTokens float64 `json:"dollars_per_m_prompt_tokens"`
}

// Candidate is one evaluated configuration.
type Candidate struct {
	Knobs   Knobs   `json:"knobs"`
	Score   float64 `json:"objective"` // in the objective's unit
	Metrics Metrics `json:"metrics"`
	point   point
}

// Sensitivity is how the objective moves along one knob with the others
// at their best values.
type Sensitivity struct {
	Knob   string       `json:"knob"`
	Points []KnobResult `json:"points"`
	Best   string       `json:"best"`
	// Spread is (worst − best) ÷ best along this knob, ≥ 0.
	Spread float64 `json:"spread"`
}

// KnobResult is the objective at one value of a knob.
type KnobResult struct {
	Value string  `json:"value"`
	Score float64 `json:"objective"`
}

// Result is the tuner's answer.
type Result struct {
	Objective   string        `json:"objective"`
	Policy      string        `json:"policy"`
	Search      string        `json:"search"`
	Runs        float64       `json:"runs"` // full-workload equivalents spent searching
	SweepRuns   int           `json:"sensitivity_runs"`
	Baseline    Candidate     `json:"baseline"` // the defaults
	Best        Candidate     `json:"best"`
	Top         []Candidate   `json:"top"`
	Sensitivity []Sensitivity `json:"sensitivity"`
	// NICMaps holds the assignment each NIC choice stands for.
	NICMaps map[string]map[string]string `json:"nic_maps"`
}

// knob is one searchable dimension: its values in order and how to set
// them.
type knob struct {
	name   string
	labels []string
	set    func(*Knobs, int)
	def    int // index of the default value
}

const nKnobs = 7

type point [nKnobs]int

type tuner struct {
	top      *topology.Topology
	w        *sim.Workload
	o        Options
	knobs    [nKnobs]knob
	nicMaps  []nicMap
	cache    map[evalKey]*Candidate
	spent    float64
	rng      *rand.Rand
	dramGiB  float64
	searched []*Candidate // full-workload evaluations
}

type nicMap struct {
	name string
	m    map[string]string
}

// Tune searches the knobs for the best objective of a policy on a
// topology and workload. The search is successive halving over random
// configurations on growing prefixes of the workload, then coordinate
// descent from the survivor on the whole workload (docs/sim-model.md says
// why); it is deterministic for a seed.
func Tune(top *topology.Topology, w *sim.Workload, o Options) (*Result, error) {
	if o.Model == "" {
		o.Model = "llama-3-70b"
	}
	if o.DType == "" {
		o.DType = "bf16"
	}
	if o.Policy == "" {
		o.Policy = sim.PolicyInNetBlend
	}
	if o.Objective == "" {
		o.Objective = ObjP99TTFT
	}
	if o.Budget == 0 {
		o.Budget = 30
	}
	if o.Prices.GPUHour == 0 {
		o.Prices.GPUHour = 2.5
	}
	if o.Prices.DRAMGiBHour == 0 {
		o.Prices.DRAMGiBHour = 0.004
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Budget < 3 {
		return nil, fmt.Errorf("budget %d, want at least 3 simulations: %w", o.Budget, ErrTune)
	}
	if _, err := ParseObjective(string(o.Objective)); err != nil {
		return nil, err
	}
	if len(w.Requests) < 8 {
		return nil, fmt.Errorf("workload of %d requests is too small to tune on (want 8 or more): %w", len(w.Requests), ErrTune)
	}
	if o.TP == 0 {
		tp, err := sim.AutoTP(top, o.Model, o.DType)
		if err != nil {
			return nil, err
		}
		o.TP = tp
	}
	t := &tuner{top: top, w: w, o: o, cache: map[evalKey]*Candidate{}, rng: rand.New(rand.NewPCG(o.Seed, 0x74756e65))}
	t.nicMaps = nicAssignments(top, o.TP)
	t.defineKnobs()
	for _, h := range top.Hosts {
		if h.IsStorage() || len(h.GPUs) == 0 {
			continue
		}
		for _, tr := range h.Tiers {
			if tr.Kind == topology.TierDRAM {
				t.dramGiB += float64(tr.Capacity) / float64(topology.GiB)
			}
		}
	}
	return t.search()
}

func (t *tuner) defineKnobs() {
	ints := func(vs ...int) []string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = strconv.Itoa(v)
		}
		return out
	}
	chunks := []int{64, 128, 256, 512, 1024}
	depths := []int{1, 2, 4, 8, 16, 32}
	tables := []int{1024, 4096, 16384, 65536, 262144}
	mems := []float64{0.125, 0.25, 0.5, 0.75, 1}
	ratios := []float64{0.05, 0.1, 0.15, 0.2, 0.3}
	floats := func(vs []float64) []string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
		return out
	}
	nics := make([]string, len(t.nicMaps))
	for i, m := range t.nicMaps {
		nics[i] = m.name
	}
	comps := make([]string, sim.CompressionLevels())
	for i := range comps {
		comps[i] = sim.CompressionName(i)
	}
	t.knobs = [nKnobs]knob{
		{"chunk_tokens", ints(chunks...), func(k *Knobs, i int) { k.ChunkTokens = chunks[i] }, 2},
		{"prefetch_depth", ints(depths...), func(k *Knobs, i int) { k.PrefetchDepth = depths[i] }, 3},
		{"table_entries", ints(tables...), func(k *Knobs, i int) { k.TableEntries = tables[i] }, 3},
		{"nic_assignment", nics, func(k *Knobs, i int) { k.NICAssignment = t.nicMaps[i].name }, 0},
		{"mem_fraction", floats(mems), func(k *Knobs, i int) { k.MemFraction = mems[i] }, 4},
		{"recompute_ratio", floats(ratios), func(k *Knobs, i int) { k.RecomputeRatio = ratios[i] }, 2},
		{"compression", comps, func(k *Knobs, i int) { k.Compression = i }, 0},
	}
}

// nicAssignments lists the NIC↔GPU assignments worth trying: the nearest
// NIC by PCIe distance (the simulator's default), round-robin over each
// host's NICs regardless of distance, and every instance on one NIC.
func nicAssignments(top *topology.Topology, tp int) []nicMap {
	out := []nicMap{{name: "nearest"}}
	rr := map[string]string{}
	var single []map[string]string
	maxNICs := 0
	for _, h := range top.Hosts {
		if h.IsStorage() || len(h.GPUs) == 0 || len(h.NICs) == 0 {
			continue
		}
		maxNICs = max(maxNICs, len(h.NICs))
		for g, n := 0, 0; g < len(h.GPUs); g, n = g+tp, n+1 {
			rr[h.Name+"/"+h.GPUs[g].Name] = h.NICs[n%len(h.NICs)].Name
		}
	}
	if maxNICs < 2 {
		return out
	}
	out = append(out, nicMap{name: "round-robin", m: rr})
	for n := range maxNICs {
		m := map[string]string{}
		for _, h := range top.Hosts {
			if h.IsStorage() || len(h.GPUs) == 0 || len(h.NICs) == 0 {
				continue
			}
			for g := 0; g < len(h.GPUs); g += tp {
				m[h.Name+"/"+h.GPUs[g].Name] = h.NICs[min(n, len(h.NICs)-1)].Name
			}
		}
		single = append(single, m)
	}
	for n, m := range single {
		out = append(out, nicMap{name: fmt.Sprintf("all-on-nic-%d", n), m: m})
	}
	return out
}

func (t *tuner) knobsAt(p point) Knobs {
	var k Knobs
	for i := range t.knobs {
		t.knobs[i].set(&k, p[i])
	}
	return k
}

func (p point) key() string {
	var b strings.Builder
	for i, v := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(v))
	}
	return b.String()
}

// evalKey identifies one evaluation: a point on a fraction of the workload.
type evalKey struct {
	p        point
	fraction float64
}

// eval simulates the policy at point p on the first fraction of the
// workload; results are cached.
func (t *tuner) eval(p point, fraction float64) (*Candidate, error) {
	key := evalKey{p, fraction}
	if c, ok := t.cache[key]; ok {
		return c, nil
	}
	k := t.knobsAt(p)
	w := t.w
	if fraction < 1 {
		w = w.Head(max(8, int(float64(len(w.Requests))*fraction)))
	}
	rep, err := sim.Run(t.top, w, sim.RunOptions{
		Model: t.o.Model, TP: t.o.TP, DType: t.o.DType, Policies: []sim.Policy{t.o.Policy},
		ChunkTokens: k.ChunkTokens, PrefetchDepth: k.PrefetchDepth, TableEntries: k.TableEntries,
		RecomputeRatio: k.RecomputeRatio, Compression: k.Compression, MemFraction: k.MemFraction,
		NICAssignment: t.nicMaps[p[3]].m,
	})
	if err != nil {
		return nil, fmt.Errorf("simulate %+v: %w", k, err)
	}
	t.spent += fraction
	pr := rep.Policies[0]
	m := Metrics{
		P50MS: pr.TTFT.P50, P90MS: pr.TTFT.P90, P99MS: pr.TTFT.P99,
		HitRatio: pr.TotalHit, GPUBusyS: pr.GPUBusyS,
	}
	if pr.GPUBusyS > 0 {
		m.TokensPerGPUS = float64(rep.PromptTokens) / pr.GPUBusyS
	}
	dollars := pr.GPUBusyS/3600*t.o.Prices.GPUHour + t.dramGiB*k.MemFraction*pr.MakespanS/3600*t.o.Prices.DRAMGiBHour
	m.DollarsPerMTokens = dollars / float64(rep.PromptTokens) * 1e6
	c := &Candidate{Knobs: k, Metrics: m, point: p}
	switch t.o.Objective {
	case ObjP99TTFT:
		c.Score = m.P99MS
	case ObjThroughput:
		c.Score = m.TokensPerGPUS
	case ObjCost:
		c.Score = m.DollarsPerMTokens
	}
	t.cache[key] = c
	if fraction == 1 {
		t.searched = append(t.searched, c)
	}
	t.o.Log.Debug("tune_eval", "knobs", p.key(), "fraction", fraction, "objective", c.Score)
	return c, nil
}

// better reports whether a beats b under the objective; ties go to the
// earlier point in knob order, so the search is deterministic.
func (t *tuner) better(a, b *Candidate) bool {
	if a.Score != b.Score {
		if t.o.Objective == ObjThroughput {
			return a.Score > b.Score
		}
		return a.Score < b.Score
	}
	return slices.Compare(a.point[:], b.point[:]) < 0
}

func (t *tuner) defaultPoint() point {
	var p point
	for i, k := range t.knobs {
		p[i] = k.def
	}
	return p
}

func (t *tuner) randomPoint() point {
	var p point
	for i, k := range t.knobs {
		p[i] = t.rng.IntN(len(k.labels))
	}
	return p
}

func (t *tuner) search() (*Result, error) {
	budget := float64(t.o.Budget)
	// Successive halving: half the budget screens random configurations
	// (and the defaults) on a quarter, then half, of the workload, keeping
	// the best third at each rung; survivors are run in full.
	rungs := []float64{0.25, 0.5, 1}
	n := max(3, int(budget/2/(0.25+0.5/3+1.0/9)))
	pool := []point{t.defaultPoint()}
	seen := map[point]bool{pool[0]: true}
	for len(pool) < n {
		p := t.randomPoint()
		if !seen[p] {
			seen[p] = true
			pool = append(pool, p)
		}
		if len(seen) > 1<<16 {
			break
		}
	}
	base, err := t.eval(t.defaultPoint(), 1)
	if err != nil {
		return nil, err
	}
	for ri, f := range rungs {
		var cs []*Candidate
		for _, p := range pool {
			c, err := t.eval(p, f)
			if err != nil {
				return nil, err
			}
			cs = append(cs, c)
		}
		slices.SortStableFunc(cs, func(a, b *Candidate) int {
			if t.better(a, b) {
				return -1
			}
			if t.better(b, a) {
				return 1
			}
			return 0
		})
		if ri < len(rungs)-1 {
			keep := max(1, (len(cs)+2)/3)
			pool = pool[:0]
			for _, c := range cs[:keep] {
				pool = append(pool, c.point)
			}
		}
	}
	best := t.bestSoFar()
	// Coordinate descent on the whole workload with what is left: step
	// each knob to a neighbouring value while that improves the objective.
	for improved := true; improved && t.spent < budget; {
		improved = false
		for i := range t.knobs {
			for _, d := range []int{-1, 1} {
				for t.spent < budget {
					p := best.point
					p[i] += d
					if p[i] < 0 || p[i] >= len(t.knobs[i].labels) {
						break
					}
					c, err := t.eval(p, 1)
					if err != nil {
						return nil, err
					}
					if !t.better(c, best) {
						break
					}
					best, improved = c, true
				}
			}
		}
	}
	best = t.bestSoFar()
	res := &Result{
		Objective: string(t.o.Objective), Policy: string(t.o.Policy),
		Search:   fmt.Sprintf("successive halving of %d random configurations on 25%%/50%%/100%% of the workload, then coordinate descent", n),
		Runs:     t.spent,
		Baseline: *base, Best: *best,
		NICMaps: map[string]map[string]string{},
	}
	for _, m := range t.nicMaps {
		res.NICMaps[m.name] = m.m
	}
	// The top five distinct full-workload evaluations.
	all := slices.Clone(t.searched)
	slices.SortStableFunc(all, func(a, b *Candidate) int {
		if t.better(a, b) {
			return -1
		}
		if t.better(b, a) {
			return 1
		}
		return 0
	})
	for _, c := range all[:min(5, len(all))] {
		res.Top = append(res.Top, *c)
	}
	// Sensitivity: each knob swept over all its values around the best.
	before := len(t.searched)
	for i, k := range t.knobs {
		s := Sensitivity{Knob: k.name, Best: k.labels[best.point[i]]}
		lo, hi := math.Inf(1), math.Inf(-1)
		for v := range k.labels {
			p := best.point
			p[i] = v
			c, err := t.eval(p, 1)
			if err != nil {
				return nil, err
			}
			s.Points = append(s.Points, KnobResult{Value: k.labels[v], Score: c.Score})
			lo, hi = min(lo, c.Score), max(hi, c.Score)
		}
		if b := best.Score; b != 0 {
			s.Spread = (hi - lo) / math.Abs(b)
		}
		res.Sensitivity = append(res.Sensitivity, s)
	}
	res.SweepRuns = len(t.searched) - before
	slices.SortStableFunc(res.Sensitivity, func(a, b Sensitivity) int { return cmp.Compare(b.Spread, a.Spread) })
	return res, nil
}

func (t *tuner) bestSoFar() *Candidate {
	var best *Candidate
	for _, c := range t.searched {
		if best == nil || t.better(c, best) {
			best = c
		}
	}
	return best
}

// NICMap returns the GPU → NIC map of the result's best assignment, for
// the daemon configuration; nil means "nearest" (the daemon's default).
func (r *Result) NICMap() map[string]string {
	return r.NICMaps[r.Best.Knobs.NICAssignment]
}
