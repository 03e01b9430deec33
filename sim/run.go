package sim

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

// Policy names a way of serving KV.
type Policy string

// The policies a run compares, on the same arrivals.
const (
	// PolicyRecompute reuses nothing: every prompt is prefilled in full.
	PolicyRecompute Policy = "recompute"
	// PolicyGPUPrefix is vLLM's automatic prefix caching: prefix blocks
	// stay in the instance's HBM until evicted.
	PolicyGPUPrefix Policy = "gpu-prefix"
	// PolicyHostOffload adds LMCache-style host tiers per instance (CPU
	// DRAM and local NVMe, write-through): matched on the host CPU when the
	// request is scheduled, loaded layer by layer over PCIe.
	PolicyHostOffload Policy = "host-offload"
	// PolicyInNet is kvloom: the accelerator NIC matches the prompt on
	// arrival and prefetches its chunks from the host's tiers and the
	// cluster's storage nodes while the request waits, stitching them
	// before one DMA per layer (peer-to-peer when the NIC and GPU share a
	// PCIe switch).
	PolicyInNet Policy = "innet"
	// PolicyInNetBlend adds non-prefix reuse: stored chunks found anywhere
	// in the prompt are loaded and a recompute budget of their tokens is
	// recomputed (CacheBlend).
	PolicyInNetBlend Policy = "innet-blend"
)

// Policies returns every policy in report order, in a fresh slice the
// caller may keep or change.
func Policies() []Policy {
	return []Policy{PolicyRecompute, PolicyGPUPrefix, PolicyHostOffload, PolicyInNet, PolicyInNetBlend}
}

// ParsePolicy accepts a policy name.
func ParsePolicy(s string) (Policy, error) {
	all := Policies()
	for _, p := range all {
		if string(p) == s {
			return p, nil
		}
	}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = string(p)
	}
	return "", fmt.Errorf("policy %q, want one of %s: %w", s, strings.Join(names, ", "), ErrConfig)
}

// Compression levels of stored KV (docs/sim-model.md): the stored size as
// a fraction of bf16, and the rate at which GPUs decode it.
var compressionLevels = [...]struct {
	name     string
	ratio    float64
	decodeBW float64 // bytes of decoded KV per second per GPU; 0 = free
}{
	{"raw", 1, 0},
	{"fp8", 0.5, 0},
	{"cachegen", 0.15, 60e9},
}

// CompressionLevels is the number of compression levels (0 … n−1).
func CompressionLevels() int { return len(compressionLevels) }

// CompressionName names a compression level.
func CompressionName(level int) string {
	if level < 0 || level >= len(compressionLevels) {
		return fmt.Sprintf("level%d", level)
	}
	return compressionLevels[level].name
}

// RunOptions configure a cluster simulation. Zero values take the
// defaults in brackets.
type RunOptions struct {
	// Model is a kvcache preset [llama-3-70b].
	Model string
	// TP is the tensor-parallel degree of each instance [the smallest
	// power of two that fits the weights in 60% of a GPU's memory].
	TP int
	// DType is the compute dtype: bf16, fp16 or fp8 [bf16].
	DType string
	// Policies to compare [all]. Speedups are reported when recompute is
	// among them.
	Policies []Policy
	// ChunkTokens is the storage and transfer granularity [256].
	ChunkTokens int
	// PrefetchDepth is how many chunk reads may be in flight per transfer
	// [8].
	PrefetchDepth int
	// TableEntries overrides the accelerators' table capacity [the
	// topology's accel.table_entries, else DefaultPipeline's].
	TableEntries int
	// RecomputeRatio is innet-blend's recompute budget [0.15, CacheBlend's
	// default].
	RecomputeRatio float64
	// Compression is the stored-KV compression level (0 raw, 1 fp8, 2
	// CacheGen-like) [0].
	Compression int
	// MemFraction is the fraction of each host DRAM tier given to KV [1].
	MemFraction float64
	// NICAssignment maps an instance's first GPU ("host/gpu") to the NIC
	// its loads use [nearest accelerator NIC by PCIe distance].
	NICAssignment map[string]string
	// HostIndexLatency is kvloomd's full-index lookup for chunks missing
	// from the accelerator's table [50µs].
	HostIndexLatency time.Duration
	// HostLookupPerToken and HostLookupPerChunk are LMCache's host-side
	// lookup costs (hashing, Python-level index) [150ns, 20µs].
	HostLookupPerToken time.Duration
	HostLookupPerChunk time.Duration
	// Pipeline is the accelerator model [DefaultPipeline()].
	Pipeline *Pipeline
	// Timeline, when set, records the paths of the first requests (as
	// many as NewTimeline was given) [none].
	Timeline *Timeline
	// Log receives progress messages [discarded].
	Log *slog.Logger
}

func (o *RunOptions) defaults() error {
	if o.Model == "" {
		o.Model = "llama-3-70b"
	}
	if o.DType == "" {
		o.DType = "bf16"
	}
	if len(o.Policies) == 0 {
		o.Policies = Policies()
	}
	if o.ChunkTokens == 0 {
		o.ChunkTokens = 256
	}
	if o.PrefetchDepth == 0 {
		o.PrefetchDepth = 8
	}
	if o.RecomputeRatio == 0 {
		o.RecomputeRatio = 0.15
	}
	if o.MemFraction == 0 {
		o.MemFraction = 1
	}
	if o.HostIndexLatency == 0 {
		o.HostIndexLatency = 50 * time.Microsecond
	}
	if o.HostLookupPerToken == 0 {
		o.HostLookupPerToken = 150 * time.Nanosecond
	}
	if o.HostLookupPerChunk == 0 {
		o.HostLookupPerChunk = 20 * time.Microsecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.ChunkTokens < 0 || o.PrefetchDepth < 0 || o.TableEntries < 0 || o.TP < 0:
		return fmt.Errorf("negative chunk size, prefetch depth, table entries or TP: %w", ErrConfig)
	case !(o.RecomputeRatio > 0 && o.RecomputeRatio <= 1):
		return fmt.Errorf("recompute ratio %v, want (0, 1]: %w", o.RecomputeRatio, ErrConfig)
	case o.Compression < 0 || o.Compression >= len(compressionLevels):
		return fmt.Errorf("compression level %d, want 0 to %d: %w", o.Compression, len(compressionLevels)-1, ErrConfig)
	case !(o.MemFraction > 0 && o.MemFraction <= 1):
		return fmt.Errorf("memory fraction %v, want (0, 1]: %w", o.MemFraction, ErrConfig)
	}
	if o.Pipeline == nil {
		p := DefaultPipeline()
		o.Pipeline = &p
	}
	return o.Pipeline.Validate()
}

// AutoTP picks the smallest power-of-two TP that divides every compute
// host's GPU count and leaves 40% of each GPU for KV.
func AutoTP(top *topology.Topology, model string, dtype string) (int, error) {
	m, err := LookupModel(model)
	if err != nil {
		return 0, err
	}
	for tp := 1; tp <= 64; tp *= 2 {
		ok := true
		for i := range top.Hosts {
			h := &top.Hosts[i]
			if h.IsStorage() || len(h.GPUs) == 0 {
				continue
			}
			spec, found := top.GPUModel(h.GPUs[0].Model)
			if !found || len(h.GPUs)%tp != 0 {
				ok = false
				break
			}
			e, err := NewEngine(m, spec, EngineOptions{TP: tp, DType: dtype})
			if err != nil || e.WeightBytes/float64(tp) > 0.6*float64(spec.Memory) {
				ok = false
				break
			}
		}
		if ok {
			return tp, nil
		}
	}
	return 0, fmt.Errorf("no tensor-parallel degree fits %s on this topology's GPUs: %w", model, ErrConfig)
}

// Event kinds.
const (
	evArrive uint8 = iota + 1
	evMatched
	evStored
	evLayer
)

// Where a token's KV came from.
const (
	srcGPU = iota
	srcHostDRAM
	srcHostNVMe
	srcRemoteDRAM
	srcRemoteNVMe
	srcRemoteRedis
	numSources
)

var sourceNames = [numSources]string{"gpu", "host-dram", "host-nvme", "remote-dram", "remote-nvme", "remote-redis"}

type reqState struct {
	inst      int32
	matchedAt int64
	enqueued  int64
	start     int64
	finish    int64
	prefixTok int32 // reused as an exact prefix (no recompute)
	blendTok  int32 // reused out of prefix (recomputed in part)
	loadedRaw int64 // bytes of KV loaded, decompressed
	xfers     []xfer
	fromTok   [numSources]int32
	late      []lateLoad // loads that wait for Prepare
	layer     int32      // layers computed so far
	compute   int64      // compute time of the prefill, ns
	perLayer  int64      // compute per layer, ns
	lastLayer int64      // the last layer's compute (takes the remainder)
}

type instState struct {
	queue   []int32
	head    int
	busy    bool
	estFree int64
	busyNs  int64
	served  int
	current int32
}

// policyRun is one policy's simulation over a cluster.
type policyRun struct {
	pol   Policy
	o     *RunOptions
	c     *cluster
	w     *Workload
	q     eventQueue
	reqs  []reqState
	insts []instState

	hbm      []*lru           // per instance, prefix keys
	instDRAM []*lru           // host-offload: per instance
	instNVMe []*lru           //
	hostDRAM []*lru           // innet: per host
	hostNVMe []*lru           //
	stor     [][numTiers]*lru // innet: per storage node
	table    map[string]*lru  // accelerator tables per host/nic
	router   *index           // prefix key → 1 + instance that last stored it

	recs           []hit // plan's scratch space
	blocksPerChunk int   // trace blocks per storage chunk (≥ 1)
	layers         int

	ratio    float64 // compression
	decodeBW float64
	kvPerTok int64
	deviceNs int64
	tl       *Timeline
	tlPid    int
}

func (p *policyRun) prefixPolicy() bool { return p.pol != PolicyRecompute }
func (p *policyRun) innet() bool        { return p.pol == PolicyInNet || p.pol == PolicyInNetBlend }

// Run simulates the workload on the topology under every policy of opts,
// each on the same arrivals, and reports what each achieved. It is
// deterministic: the same inputs give the same report.
func Run(top *topology.Topology, w *Workload, opts RunOptions) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if len(w.Requests) == 0 {
		return nil, fmt.Errorf("workload %q has no requests: %w", w.Name, ErrConfig)
	}
	if opts.TP == 0 {
		tp, err := AutoTP(top, opts.Model, opts.DType)
		if err != nil {
			return nil, err
		}
		opts.TP = tp
	}
	rep := &Report{
		Topology: top.Name, Workload: w.Name, Model: opts.Model, TP: opts.TP, DType: opts.DType,
		Requests: len(w.Requests), PromptTokens: w.PromptTokens(),
		ChunkTokens: opts.ChunkTokens, PrefetchDepth: opts.PrefetchDepth, RecomputeRatio: opts.RecomputeRatio,
		Compression: CompressionName(opts.Compression), MemFraction: opts.MemFraction,
	}
	for _, pol := range opts.Policies {
		c, err := buildCluster(top, clusterOptions{
			model: opts.Model, tp: opts.TP, dtype: opts.DType,
			nicOverride: opts.NICAssignment, pipeline: *opts.Pipeline, tableEntries: opts.TableEntries,
		})
		if err != nil {
			return nil, err
		}
		if rep.Instances == 0 {
			rep.Instances = len(c.insts)
			rep.GPU = c.insts[0].eng.GPU.Name
			rep.KVBytesPerToken = c.insts[0].eng.KVBytesPerToken
			for _, in := range c.insts {
				rep.NICAssignment = append(rep.NICAssignment, NICUse{Instance: c.instName(int32(len(rep.NICAssignment))), NIC: in.nic, Distance: in.dist.String()})
			}
		}
		pr := newPolicyRun(pol, &opts, c, w, len(rep.Policies))
		opts.Log.Info("sim_policy_start", "policy", string(pol), "requests", len(w.Requests), "instances", len(c.insts))
		pr.run()
		rep.Events += pr.q.processed
		rep.Policies = append(rep.Policies, pr.report())
	}
	rep.computeSpeedups()
	return rep, nil
}

func newPolicyRun(pol Policy, o *RunOptions, c *cluster, w *Workload, idx int) *policyRun {
	p := &policyRun{
		pol: pol, o: o, c: c, w: w,
		reqs:     make([]reqState, len(w.Requests)),
		insts:    make([]instState, len(c.insts)),
		ratio:    compressionLevels[o.Compression].ratio,
		decodeBW: compressionLevels[o.Compression].decodeBW,
		kvPerTok: int64(c.insts[0].eng.KVBytesPerToken),
		tl:       o.Timeline,
		tlPid:    idx + 1,
		router:   newIndex(),
		table:    map[string]*lru{},
	}
	p.q.h = make([]event, 0, 1024)
	p.layers = c.insts[0].eng.Layers()
	bt := 0
	for i := range w.Requests {
		for _, b := range w.Requests[i].Blocks {
			bt = max(bt, int(b.Tokens))
		}
	}
	p.blocksPerChunk = max(1, o.ChunkTokens/max(bt, 1))
	if p.tl != nil {
		p.tl.process(p.tlPid, string(pol))
	}
	// Capacities are in tokens of KV; stored KV is compressed.
	storedTokens := func(bytes int64) int64 {
		return int64(float64(bytes) / (float64(p.kvPerTok) * p.ratio))
	}
	if p.prefixPolicy() {
		for _, in := range c.insts {
			p.hbm = append(p.hbm, newLRU(int64(in.eng.KVCapacityTokens())))
		}
	}
	switch {
	case pol == PolicyHostOffload:
		for _, in := range c.insts {
			h := &c.hosts[in.host]
			n := int64(len(h.insts))
			p.instDRAM = append(p.instDRAM, newLRU(storedTokens(int64(float64(h.tiers[tierDRAM].capacity)*o.MemFraction)/n)))
			p.instNVMe = append(p.instNVMe, newLRU(storedTokens(h.tiers[tierNVMe].capacity/n)))
		}
	case p.innet():
		for _, h := range c.hosts {
			p.hostDRAM = append(p.hostDRAM, newLRU(storedTokens(int64(float64(h.tiers[tierDRAM].capacity)*o.MemFraction))))
			p.hostNVMe = append(p.hostNVMe, newLRU(storedTokens(h.tiers[tierNVMe].capacity)))
		}
		for _, si := range c.storage {
			h := &c.hosts[si]
			var t [numTiers]*lru
			for k := range numTiers {
				t[k] = newLRU(storedTokens(h.tiers[k].capacity))
			}
			p.stor = append(p.stor, t)
		}
		for _, in := range c.insts {
			key := c.hosts[in.host].name + "/" + in.nic
			if _, ok := p.table[key]; !ok {
				p.table[key] = newLRU(int64(in.pipe.TableEntries))
			}
		}
	}
	return p
}

func (p *policyRun) run() {
	for i := range p.w.Requests {
		p.q.push(int64(p.w.Requests[i].Arrival), evArrive, int32(i), 0)
	}
	for p.q.len() > 0 {
		e := p.q.pop()
		switch e.kind {
		case evArrive:
			p.arrive(e.at, e.a)
		case evMatched:
			p.matched(e.at, e.a)
		case evStored:
			p.stored(e.at, e.a)
		case evLayer:
			p.layer(e.at, e.b, e.a)
		}
	}
}

// messages returns how many transfers moving tokens tokens of KV takes:
// one per chunk per layer, since KV moves layer by layer.
func (p *policyRun) messages(tokens int64) int {
	return p.chunks(tokens) * p.layers
}

// chunks returns how many storage chunks tokens tokens make.
func (p *policyRun) chunks(tokens int64) int {
	return int((tokens + int64(p.o.ChunkTokens) - 1) / int64(p.o.ChunkTokens))
}

// route picks an instance: the one whose HBM the router believes holds the
// longest prefix, or the one expected to be free first, whichever is
// expected to finish the request sooner (Dynamo's KV-aware routing cost).
func (p *policyRun) route(now int64, r *Request) int32 {
	best, bestFree := int32(0), int64(math.MaxInt64)
	for i := range p.insts {
		f := max(now, p.insts[i].estFree)
		if f < bestFree {
			best, bestFree = int32(i), f
		}
	}
	eng := p.c.insts[best].eng
	bestEnd := bestFree + int64(eng.Prefill(0, int(r.Tokens)))
	if !p.prefixPolicy() {
		return best
	}
	cand, hit := int32(-1), int64(0)
	var tok int64
	for j, k := range r.Prefix {
		tok += int64(r.Blocks[j].Tokens)
		if v, ok := p.router.get(k); ok && (cand < 0 || v-1 == cand) {
			cand, hit = v-1, tok
		} else {
			break
		}
	}
	if cand >= 0 && cand != best {
		hit = min(hit, int64(r.Tokens)-1)
		e := p.c.insts[cand].eng
		end := max(now, p.insts[cand].estFree) + int64(e.Prefill(int(hit), int(int64(r.Tokens)-hit)))
		if end < bestEnd {
			return cand
		}
	}
	return best
}

func (p *policyRun) arrive(now int64, ri int32) {
	r := &p.w.Requests[ri]
	i := p.route(now, r)
	st := &p.reqs[ri]
	st.inst = i
	in := &p.c.insts[i]
	est := int64(in.eng.Prefill(0, int(r.Tokens)))
	p.insts[i].estFree = max(now, p.insts[i].estFree) + est
	if !p.innet() {
		p.enqueue(now, i, ri)
		return
	}
	// The hint reaches the NIC with the request: the accelerator matches
	// the prompt (or, without one, kvloomd's index does).
	dt := p.o.HostIndexLatency
	if in.accel {
		t := in.pipe.Time(Work{Tokens: int(r.Tokens), Lookups: p.chunks(int64(r.Tokens)), Events: len(r.Blocks)})
		dt = t.HostToDevice + t.Match + t.DeviceToHost
		p.deviceNs += int64(dt)
	}
	p.q.push(now+int64(dt), evMatched, ri, 0)
	if p.tl.want(ri) {
		p.tl.span(p.tlPid, "nic "+p.c.hosts[in.host].name+"/"+in.nic, "match", now, now+int64(dt), ri)
	}
}

// matched plans an innet request's loads and starts its prefetch.
func (p *policyRun) matched(now int64, ri int32) {
	r := &p.w.Requests[ri]
	st := &p.reqs[ri]
	st.matchedAt = now
	p.plan(now, ri, r, st)
	p.enqueue(now, st.inst, ri)
}

func (p *policyRun) enqueue(now int64, i, ri int32) {
	st := &p.reqs[ri]
	st.enqueued = now
	is := &p.insts[i]
	is.queue = append(is.queue, ri)
	if !is.busy {
		p.startNext(now, i)
	}
}

// hit records where one block of a request was found.
type hit struct {
	where  int // 0 host DRAM, 1 host NVMe, 2+ storage node × tier; -1 HBM
	prefix bool
}

// plan finds where each block's KV is, starts the prefetch of what the
// accelerator's table knows, and leaves the rest (found by kvloomd's full
// index when the engine calls Prepare) for when the request is scheduled.
// A reused prefix ends at a chunk boundary: a partial chunk is recomputed.
func (p *policyRun) plan(now int64, ri int32, r *Request, st *reqState) {
	in := &p.c.insts[st.inst]
	hostIdx := in.host
	hbm := p.hbm[st.inst]
	blend := p.pol == PolicyInNetBlend
	var tbl *lru
	if in.accel {
		tbl = p.table[p.c.hosts[hostIdx].name+"/"+in.nic]
	}
	recs := p.recs[:0]
	prefix, hbmRun, prefixRun := true, 0, 0
	last := len(r.Blocks) - 1
	for j, b := range r.Blocks {
		if j == last && prefix {
			break // the last block is always computed: its logits are needed
		}
		if prefix {
			if _, ok := hbm.peek(r.Prefix[j]); ok {
				recs = append(recs, hit{where: -1, prefix: true})
				hbmRun++
				prefixRun++
				continue
			}
		}
		key := r.Prefix[j]
		if blend {
			key = b.ID
		}
		where, found, val := p.locate(hostIdx, in, key)
		if !found {
			if !blend {
				break
			}
			prefix = false
			recs = append(recs, hit{where: -2})
			continue
		}
		h := hit{where: where, prefix: prefix && (!blend || val == r.Prefix[j])}
		if h.prefix {
			prefixRun++
		} else {
			prefix = false
		}
		recs = append(recs, h)
	}
	// Trim the prefix to whole chunks (beyond what HBM holds).
	if bpc := p.blocksPerChunk; bpc > 1 {
		keep := max(hbmRun, prefixRun-prefixRun%bpc)
		for j := keep; j < prefixRun; j++ {
			recs[j].where = -2
		}
	}
	var early, late [2 + 3*8]int64
	var dynEarly, dynLate []int64
	if n := 2 + numTiers*len(p.c.storage); n > len(early) {
		dynEarly, dynLate = make([]int64, n), make([]int64, n)
	} else {
		dynEarly, dynLate = early[:n], late[:n]
	}
	for j, h := range recs {
		b := r.Blocks[j]
		switch h.where {
		case -2:
			continue
		case -1:
			hbm.get(r.Prefix[j])
			st.prefixTok += b.Tokens
			st.fromTok[srcGPU] += b.Tokens
			continue
		}
		key := r.Prefix[j]
		if blend {
			key = b.ID
		}
		p.touch(hostIdx, h.where, key)
		if h.prefix {
			st.prefixTok += b.Tokens
		} else {
			st.blendTok += b.Tokens
		}
		switch h.where {
		case 0:
			st.fromTok[srcHostDRAM] += b.Tokens
		case 1:
			st.fromTok[srcHostNVMe] += b.Tokens
		default:
			st.fromTok[srcRemoteDRAM+(h.where-2)%numTiers] += b.Tokens
		}
		isLate := false
		if tbl != nil {
			if _, ok := tbl.get(key); !ok {
				isLate = true
				tbl.put(key, 0, int32(max(1, p.chunks(int64(b.Tokens)))))
			}
		}
		if isLate {
			dynLate[h.where] += int64(b.Tokens)
		} else {
			dynEarly[h.where] += int64(b.Tokens)
		}
	}
	p.recs = recs
	for w, tok := range dynEarly {
		if tok > 0 {
			p.load(now, st, in.sourceRoute(w), tok, ri)
		}
	}
	st.late = st.late[:0]
	for w, tok := range dynLate {
		if tok > 0 {
			st.late = append(st.late, lateLoad{where: int32(w), tokens: tok})
		}
	}
}

// lateLoad is a load kvloomd resolves only when the engine calls Prepare.
type lateLoad struct {
	where  int32
	tokens int64
}

// sourceRoute returns the routes from a plan source to the instance.
func (in *instance) sourceRoute(where int) routeGroup {
	switch where {
	case 0:
		return in.dramDown
	case 1:
		return in.nvmeDown
	}
	return in.remote[where-2]
}

// locate finds a key in the host's tiers, then in its storage node's,
// without touching recency.
func (p *policyRun) locate(hostIdx int32, in *instance, key uint64) (int, bool, uint64) {
	if v, ok := p.hostDRAM[hostIdx].peek(key); ok {
		return 0, true, v
	}
	if v, ok := p.hostNVMe[hostIdx].peek(key); ok {
		return 1, true, v
	}
	if len(p.stor) > 0 && in.nic != "" {
		s := int(mix64(key) % uint64(len(p.stor)))
		for k := range numTiers {
			if v, ok := p.stor[s][k].peek(key); ok {
				return 2 + s*numTiers + k, true, v
			}
		}
	}
	return -1, false, 0
}

// touch marks a located key recently used in its tier.
func (p *policyRun) touch(hostIdx int32, where int, key uint64) {
	switch where {
	case 0:
		p.hostDRAM[hostIdx].get(key)
	case 1:
		p.hostNVMe[hostIdx].get(key)
	default:
		w := where - 2
		p.stor[w/numTiers][w%numTiers].get(key)
	}
}

// load reserves the transfer of tokens tokens of stored KV over g.
func (p *policyRun) load(now int64, st *reqState, g routeGroup, tokens int64, ri int32) {
	raw := tokens * p.kvPerTok
	bytes := int64(float64(raw) * p.ratio)
	n := len(st.xfers)
	st.xfers = p.c.reserveGroup(st.xfers, now, g, bytes, p.messages(tokens), p.o.PrefetchDepth)
	st.loadedRaw += raw
	if p.tl.want(ri) {
		for _, x := range st.xfers[n:] {
			p.tl.span(p.tlPid, "links "+p.c.instName(st.inst), "load "+p.c.res[x.route].name, x.start, x.end, ri)
		}
	}
}

// startNext starts the instance's next queued request at now.
func (p *policyRun) startNext(now int64, i int32) {
	is := &p.insts[i]
	if is.head >= len(is.queue) {
		is.busy = false
		is.queue, is.head = is.queue[:0], 0
		return
	}
	ri := is.queue[is.head]
	is.head++
	is.busy = true
	is.current = ri
	r := &p.w.Requests[ri]
	st := &p.reqs[ri]
	in := &p.c.insts[i]
	start := now
	switch p.pol {
	case PolicyGPUPrefix:
		p.planHBM(r, st)
	case PolicyHostOffload:
		start += p.planHost(now, ri, r, st)
	case PolicyInNet, PolicyInNetBlend:
		// Prepare: kvloomd's full index resolves what the accelerator's
		// table did not know, and those loads start now.
		if len(st.late) > 0 {
			start += int64(p.o.HostIndexLatency)
			for _, l := range st.late {
				p.load(start, st, in.sourceRoute(int(l.where)), l.tokens, ri)
			}
		}
	}
	st.start = start
	computed := int(r.Tokens - st.prefixTok - st.blendTok)
	compute := in.eng.Prefill(int(r.Tokens)-computed, computed) + in.eng.Overhead
	if st.blendTok > 0 {
		compute += in.eng.Recompute(int(r.Tokens), int(math.Round(p.o.RecomputeRatio*float64(st.blendTok))))
	}
	if p.decodeBW > 0 && st.loadedRaw > 0 {
		compute += seconds(float64(st.loadedRaw) / (p.decodeBW * float64(in.eng.TP)))
	}
	// Compute layer by layer: layer l starts when layer l−1 is done and
	// every transfer has delivered layer l's KV (vLLM's
	// wait_for_layer_load). One event per layer.
	L := int64(in.eng.Layers())
	st.compute = int64(compute)
	st.perLayer = int64(compute) / L
	st.lastLayer = int64(compute) - st.perLayer*(L-1)
	st.layer = 0
	p.q.push(max(start, readyAt(st.xfers, 0, L))+st.perLayer, evLayer, ri, i)
	if p.tl.want(ri) && st.enqueued < now {
		p.tl.span(p.tlPid, "gpu "+p.c.instName(i), "queue", st.enqueued, now, ri)
	}
}

// layer ends one layer's compute and starts the next, or finishes the
// prefill after the last.
func (p *policyRun) layer(now int64, i, ri int32) {
	st := &p.reqs[ri]
	st.layer++
	L := int64(p.c.insts[i].eng.Layers())
	if int64(st.layer) == L {
		st.finish = now
		if p.tl.want(ri) {
			p.tl.span(p.tlPid, "gpu "+p.c.instName(i), "prefill", st.start, now, ri)
		}
		p.done(now, i, ri)
		return
	}
	c := st.perLayer
	if int64(st.layer) == L-1 {
		c = st.lastLayer
	}
	p.q.push(max(now, readyAt(st.xfers, int64(st.layer), L))+c, evLayer, ri, i)
}

// readyAt is when every transfer has delivered layer l of L: each
// transfer's layers arrive evenly over its span after its latency.
func readyAt(xs []xfer, l, L int64) int64 {
	var t int64
	for i := range xs {
		t = max(t, xs[i].a+(l+1)*xs[i].span/L)
	}
	return t
}

// planHBM finds the request's prefix in the instance's HBM.
func (p *policyRun) planHBM(r *Request, st *reqState) {
	hbm := p.hbm[st.inst]
	for j := range len(r.Blocks) - 1 {
		if _, ok := hbm.get(r.Prefix[j]); !ok {
			return
		}
		st.prefixTok += r.Blocks[j].Tokens
		st.fromTok[srcGPU] += r.Blocks[j].Tokens
	}
}

// planHost is LMCache's retrieval at scheduling time: HBM prefix, then the
// instance's DRAM and disk tiers, after a host-side lookup, ending at a
// chunk boundary. It returns the lookup's cost.
func (p *policyRun) planHost(now int64, ri int32, r *Request, st *reqState) int64 {
	lookup := int64(p.o.HostLookupPerToken)*int64(r.Tokens) + int64(p.o.HostLookupPerChunk)*int64(p.chunks(int64(r.Tokens)))
	hbm, dram, nvme := p.hbm[st.inst], p.instDRAM[st.inst], p.instNVMe[st.inst]
	recs := p.recs[:0]
	hbmRun := 0
	for j := range len(r.Blocks) - 1 {
		k := r.Prefix[j]
		if _, ok := hbm.peek(k); ok && hbmRun == len(recs) {
			recs = append(recs, hit{where: -1})
			hbmRun++
		} else if _, ok := dram.peek(k); ok {
			recs = append(recs, hit{where: 0})
		} else if _, ok := nvme.peek(k); ok {
			recs = append(recs, hit{where: 1})
		} else {
			break
		}
	}
	n := len(recs)
	if bpc := p.blocksPerChunk; bpc > 1 {
		n = max(hbmRun, n-n%bpc)
	}
	var fromDRAM, fromNVMe int64
	for j, h := range recs[:n] {
		tok := r.Blocks[j].Tokens
		switch h.where {
		case -1:
			hbm.get(r.Prefix[j])
			st.fromTok[srcGPU] += tok
		case 0:
			dram.get(r.Prefix[j])
			fromDRAM += int64(tok)
			st.fromTok[srcHostDRAM] += tok
		case 1:
			nvme.get(r.Prefix[j])
			fromNVMe += int64(tok)
			st.fromTok[srcHostNVMe] += tok
		}
		st.prefixTok += tok
	}
	p.recs = recs
	in := &p.c.insts[st.inst]
	if fromDRAM > 0 {
		p.load(now+lookup, st, in.dramDown, fromDRAM, ri)
	}
	if fromNVMe > 0 && len(in.nvmeDown) > 0 {
		p.load(now+lookup, st, in.nvmeDown, fromNVMe, ri)
	}
	return lookup
}

// done finishes a request: KV write-back, statistics, the next request.
func (p *policyRun) done(now int64, i, ri int32) {
	r := &p.w.Requests[ri]
	st := &p.reqs[ri]
	is := &p.insts[i]
	is.busyNs += st.finish - st.start
	is.served++
	if is.head >= len(is.queue) {
		is.estFree = now
	}
	in := &p.c.insts[i]
	if p.prefixPolicy() {
		hbm := p.hbm[i]
		for j, b := range r.Blocks {
			hbm.put(r.Prefix[j], 0, b.Tokens)
			p.router.put(r.Prefix[j], i+1)
		}
	}
	switch {
	case p.pol == PolicyHostOffload:
		p.writeBackHost(now, ri, r, in)
	case p.innet():
		p.writeBackCluster(now, ri, r, st, in)
	}
	st.xfers = nil
	p.startNext(now, i)
}

// writeBackHost stores a request's new chunks in the instance's DRAM and,
// write-through, on its disk (LMCache stores every chunk on every local
// backend).
func (p *policyRun) writeBackHost(now int64, ri int32, r *Request, in *instance) {
	st := &p.reqs[ri]
	dram, nvme := p.instDRAM[st.inst], p.instNVMe[st.inst]
	// Every chunk is put (present ones only refreshed): each tier sees
	// the same sequence of accesses whatever its size, which keeps LRU a
	// stack algorithm (a bigger tier never hits less).
	var newTok int64
	for j, b := range r.Blocks {
		if _, ok := dram.peek(r.Prefix[j]); !ok {
			newTok += int64(b.Tokens)
		}
		dram.put(r.Prefix[j], 0, b.Tokens)
		nvme.put(r.Prefix[j], 0, b.Tokens)
	}
	if newTok > 0 {
		var tmp [8]xfer
		p.c.reserveGroup(tmp[:0], now, in.gpuUp, int64(float64(newTok*p.kvPerTok)*p.ratio), p.messages(newTok), p.o.PrefetchDepth)
		if len(in.dramNVMe.links) > 0 {
			p.c.reserve(now, &in.dramNVMe, int64(float64(newTok*p.kvPerTok)*p.ratio), p.messages(newTok), p.o.PrefetchDepth)
		}
	}
}

// writeBackCluster is kvloomd's write-back: new chunks go to the host's
// DRAM tier (demoting what it evicts to the host's NVMe) and to the
// storage node that owns each chunk, where they become visible to every
// host once written.
func (p *policyRun) writeBackCluster(now int64, ri int32, r *Request, st *reqState, in *instance) {
	blend := p.pol == PolicyInNetBlend
	dram, nvme := p.hostDRAM[in.host], p.hostNVMe[in.host]
	var toHost, demoted int64
	perNode := make([]int64, len(p.stor))
	for j, b := range r.Blocks {
		key := r.Prefix[j]
		if blend {
			key = b.ID
		}
		if _, ok := dram.peek(key); !ok {
			toHost += int64(b.Tokens)
			dram.put(key, r.Prefix[j], b.Tokens)
			for _, ev := range dram.evicted {
				nvme.put(ev.key, ev.val, ev.size)
				demoted += int64(ev.size)
			}
		}
		if len(p.stor) > 0 && in.nic != "" {
			s := int(mix64(key) % uint64(len(p.stor)))
			if _, ok := p.stor[s][tierDRAM].peek(key); !ok {
				perNode[s] += int64(b.Tokens)
			}
		}
	}
	bytes := func(tok int64) int64 { return int64(float64(tok*p.kvPerTok) * p.ratio) }
	if toHost > 0 {
		var tmp [8]xfer
		p.c.reserveGroup(tmp[:0], now, in.gpuUp, bytes(toHost), p.messages(toHost), p.o.PrefetchDepth)
	}
	if demoted > 0 && len(in.dramNVMe.links) > 0 {
		p.c.reserve(now, &in.dramNVMe, bytes(demoted), p.messages(demoted), p.o.PrefetchDepth)
	}
	var end int64 = -1
	for s, tok := range perNode {
		if tok == 0 {
			continue
		}
		var tmp [8]xfer
		xs := p.c.reserveGroup(tmp[:0], now, in.remoteUp[s], bytes(tok), p.messages(tok), p.o.PrefetchDepth)
		for _, x := range xs {
			end = max(end, x.end)
			if p.tl.want(ri) {
				p.tl.span(p.tlPid, "links "+p.c.instName(st.inst), "write-back "+p.c.res[x.route].name, x.start, x.end, ri)
			}
		}
	}
	if end >= 0 {
		p.q.push(end, evStored, ri, 0)
	}
}

// stored makes a request's chunks visible on their storage nodes, demoting
// what DRAM evicts to NVMe (and to Redis when there is no NVMe tier).
func (p *policyRun) stored(now int64, ri int32) {
	r := &p.w.Requests[ri]
	blend := p.pol == PolicyInNetBlend
	for j, b := range r.Blocks {
		key := r.Prefix[j]
		if blend {
			key = b.ID
		}
		s := int(mix64(key) % uint64(len(p.stor)))
		t := p.stor[s]
		if _, ok := t[tierDRAM].peek(key); ok {
			continue
		}
		t[tierDRAM].put(key, r.Prefix[j], b.Tokens)
		for _, ev := range t[tierDRAM].evicted {
			if t[tierNVMe].capacity > 0 {
				t[tierNVMe].put(ev.key, ev.val, ev.size)
				sh := &p.c.hosts[p.c.storage[s]]
				rt := p.c.mkRoute(sh.tiers[tierNVMe].write)
				p.c.reserve(now, &rt, int64(float64(int64(ev.size)*p.kvPerTok)*p.ratio), p.messages(int64(ev.size)), p.o.PrefetchDepth)
			} else if t[tierRedis].capacity > 0 {
				t[tierRedis].put(ev.key, ev.val, ev.size)
			}
		}
	}
}
