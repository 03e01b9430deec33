package demo

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/dustin/go-humanize"
)

// Summary is what a demo run measured and checked; `kvloom demo --json`
// prints it as it is.
type Summary struct {
	// OK is true when every check passed; Failures says what did not.
	OK       bool     `json:"ok"`
	Failures []string `json:"failures"`

	Model    ModelInfo  `json:"model"`
	Daemon   DaemonInfo `json:"daemon"`
	Requests Requests   `json:"requests"`
	// Reuse counts the tokens of every Prepare, both workloads together.
	Reuse Reuse    `json:"reuse"`
	Chat  Workload `json:"chat"`
	RAG   Workload `json:"rag"`
	// PrefixOnly is output equality for requests whose reuse is all prefix.
	PrefixOnly Equality `json:"prefix_only"`
	// Blended is the quality of requests with non-prefix reuse.
	Blended Blended `json:"blended"`
	Tiers   []Tier  `json:"tiers"`
	Prefill Prefill `json:"prefill"`
	Device  Device  `json:"device"`
	Checks  Checks  `json:"checks"`
	// Seconds is the wall time of the whole run.
	Seconds float64 `json:"elapsed_s"`
}

// ModelInfo names the model the engine ran.
type ModelInfo struct {
	Name        string `json:"name"`
	Dir         string `json:"dir"`
	Fingerprint string `json:"fingerprint"`
	Layers      int    `json:"layers"`
	SeqLen      int    `json:"seq_len"`
}

// DaemonInfo is the embedded daemon's setup.
type DaemonInfo struct {
	Socket         string `json:"socket"`
	Tiers          string `json:"tiers"`
	Device         string `json:"device"`
	DMA            string `json:"dma"`
	Recompute      string `json:"recompute"`
	ChunkTokens    int    `json:"chunk_tokens"`
	MinChunkTokens int    `json:"min_chunk_tokens"`
	// ControlInterval is how often the control loop pushes the device's
	// hot table.
	ControlInterval string `json:"control_interval"`
	// DataDir and SegmentDir are the temporary directories the daemon
	// used; Run removes them (DataDir stays with Options.Keep).
	DataDir    string `json:"data_dir"`
	SegmentDir string `json:"segment_dir"`
	// KeptDataDir is the data directory left for inspection (--keep).
	KeptDataDir string `json:"kept_data_dir,omitempty"`
}

// Requests counts the API calls the engine made; each one succeeded (a
// failed call ends the run with an error).
type Requests struct {
	Prepare int `json:"prepare"`
	// Served are the Prepares whose plan the engine used to answer.
	Served   int `json:"served"`
	Lookup   int `json:"lookup"`
	Store    int `json:"store"`
	Release  int `json:"release"`
	Chunks   int `json:"stored_chunks"`
	Bytes    int `json:"stored_bytes"`
	Daemon   int `json:"daemon_prepares"` // Stats.prepares, as the daemon counted them
	Lookups  int `json:"lookups_agreeing"`
	Segments int `json:"segments_mapped"`
}

// Reuse is tokens asked about and reused.
type Reuse struct {
	PromptTokens int `json:"prompt_tokens"`
	Reused       int `json:"reused_tokens"`
	Prefix       int `json:"prefix_tokens"`
	NonPrefix    int `json:"non_prefix_tokens"`
	// Rotated are reused tokens whose keys the stitcher re-rotated.
	Rotated int `json:"rotated_tokens"`
	// Daemon is Stats.reused_tokens, as the daemon counted it.
	Daemon int `json:"daemon_reused_tokens"`
}

// Workload is one workload's requests and reuse.
type Workload struct {
	Requests     int `json:"requests"`
	PromptTokens int `json:"prompt_tokens"`
	Prefix       int `json:"prefix_tokens"`
	NonPrefix    int `json:"non_prefix_tokens"`
	// WithReuse counts the requests that reused anything.
	WithReuse int `json:"requests_with_reuse"`
	// Conversations and Turns (chat), Docs and DocTokens (RAG) size it.
	Conversations int `json:"conversations,omitempty"`
	Turns         int `json:"turns,omitempty"`
	Docs          int `json:"docs,omitempty"`
	DocTokens     int `json:"doc_tokens,omitempty"`
	MaxDocs       int `json:"max_docs_per_prompt,omitempty"`
}

// Equality compares prefix-only reuse with a full prefill.
type Equality struct {
	Requests int `json:"requests"`
	// Equal counts requests whose logits stayed within Tolerance at every
	// continuation position and whose greedy continuation was identical.
	Equal        int     `json:"equal"`
	MaxLogitDiff float64 `json:"max_logit_diff"`
	Tolerance    float64 `json:"tolerance"`
	// Tokens is the greedy continuation compared per request.
	Tokens int `json:"greedy_tokens"`
}

// Blended is the quality of non-prefix reuse against a full prefill.
type Blended struct {
	Requests int `json:"requests"`
	// Continue is the continuation positions scored per RAG request.
	Continue int          `json:"continue"`
	Policies []QualityRow `json:"policies"`
}

// QualityRow is one way of using the reused KV, over the blended requests.
type QualityRow struct {
	// Policy: "stitched" (RoPE-corrected KV, nothing recomputed but what no
	// range covers), "plan <policy>" (the daemon's recompute positions),
	// "cacheblend ratio:R" (the engine's KV-deviation selection).
	Policy string  `json:"policy"`
	MeanKL float64 `json:"mean_kl"`
	KLErr  float64 `json:"kl_stderr"`
	Top1   float64 `json:"top1_agreement"`
	// MatchLen is the mean greedy continuation equal to the full
	// prefill's, in tokens.
	MatchLen float64 `json:"greedy_match_len"`
	// Fresh is the mean fraction of prompt tokens computed through every
	// layer; Compute the prefill work relative to a full prefill.
	Fresh   float64 `json:"recomputed_frac"`
	Compute float64 `json:"compute_frac"`
	// Seconds is the engine's time for these prefills (load included).
	Seconds float64 `json:"engine_s"`
}

// Tier is one storage tier's traffic, from the daemon's Stats.
type Tier struct {
	Tier         string `json:"tier"`
	Hits         uint64 `json:"hits"`
	Misses       uint64 `json:"misses"`
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
}

// Prefill is the engine's prefill time on the same prompts: a full
// prefill, and the prefill over the KV the daemon handed it.
type Prefill struct {
	Chat  PrefillTimes `json:"chat"`
	RAG   PrefillTimes `json:"rag"`
	Total PrefillTimes `json:"total"`
}

// PrefillTimes are seconds summed over requests.
type PrefillTimes struct {
	Full  float64 `json:"full_s"`
	Reuse float64 `json:"reuse_s"`
	// Prepare is the daemon's part: the Prepare call and mapping its
	// segment.
	Prepare float64 `json:"prepare_s"`
	Saved   float64 `json:"saved_s"`
	// SavedFrac is Saved / Full.
	SavedFrac float64 `json:"saved_frac"`
}

// Device is the accelerator's view, from the daemon's Devices and Stats.
type Device struct {
	Backend       string `json:"backend"`
	Requests      uint64 `json:"requests"`
	Matches       uint64 `json:"matches"`
	TableEntries  int    `json:"table_entries"`
	TableCapacity int    `json:"table_capacity"`
	// Ranges counts reused ranges the device's hot table matched.
	Ranges        int `json:"ranges_matched_on_device"`
	ControlRounds int `json:"control_rounds"`
}

// Checks are the demo's pass/fail verdicts.
type Checks struct {
	// PrefixEqual: every prefix-only request's output equals the full
	// prefill's (and there was at least one).
	PrefixEqual bool `json:"prefix_equal"`
	// KVVerified: every reused range held the tokens and KV the engine
	// stored under its key; RangesChecked counts them.
	KVVerified    bool `json:"kv_verified"`
	RangesChecked int  `json:"ranges_checked"`
	// CountersAgree: the daemon's counters (prepares, reused tokens) equal
	// the engine's.
	CountersAgree bool `json:"counters_agree"`
	// LookupAgrees: every Lookup promised what the Prepare after it reused.
	LookupAgrees bool `json:"lookup_agrees"`
	// Isolation: another tenant looking up a conversation reuses no more
	// than a tenant with nothing stored.
	Isolation bool `json:"isolation"`
	// BlendedFinite: every blended quality figure is a number.
	BlendedFinite bool `json:"blended_finite"`
	// Shutdown: the daemon stopped cleanly (nothing cancelled or
	// unflushed, no error, Serve returned); TempRemoved: its directories
	// are gone (the data directory kept with --keep).
	Shutdown    bool           `json:"shutdown_clean"`
	ShutdownRep ShutdownDetail `json:"shutdown"`
	TempRemoved bool           `json:"temp_removed"`
}

// ShutdownDetail is the daemon's shutdown report.
type ShutdownDetail struct {
	Flushed   int      `json:"flushed"`
	Partial   int      `json:"partial"`
	Unflushed int      `json:"unflushed"`
	Cancelled int      `json:"cancelled"`
	Errors    []string `json:"errors,omitempty"`
}

// WriteText writes the summary for a terminal.
func (s *Summary) WriteText(w io.Writer) error {
	p := &printer{w: w}
	pct := func(a, b int) string { return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(max(b, 1))) }
	p.f("kvloom demo: an embedded kvloomd driven over gRPC by the reference engine on %s\n\n", s.Model.Name)
	p.f("daemon    %s; tiers %s; device %s, dma %s\n", s.Daemon.Socket, s.Daemon.Tiers, s.Daemon.Device, s.Daemon.DMA)
	p.f("          its defaults, but for prefix blocks of %d tokens and chunks of at least %d (sized for the tiny model),\n", s.Daemon.ChunkTokens, s.Daemon.MinChunkTokens)
	p.f("          shared writes allowed (the RAG library) and a control round every %s; requests ask for recompute %s\n", s.Daemon.ControlInterval, s.Daemon.Recompute)
	p.f("model     %s (%d layers, %d positions), fingerprint %s, from %s\n\n", s.Model.Name, s.Model.Layers, s.Model.SeqLen, s.Model.Fingerprint, s.Model.Dir)

	c := s.Chat
	p.f("chat      %d conversations x %d turns (tenants alice, bob): %d requests, %s prompt tokens\n", c.Conversations, c.Turns, c.Requests, num(c.PromptTokens))
	p.f("          each turn = the previous prompt + the model's reply + new user text; the engine stores its KV\n")
	p.f("          reused %s tokens (%s): prefix %s, non-prefix %s; %d of %d requests reused their history\n",
		num(c.Prefix+c.NonPrefix), pct(c.Prefix+c.NonPrefix, c.PromptTokens), num(c.Prefix), num(c.NonPrefix), c.WithReuse, c.Requests)
	e := s.PrefixOnly
	p.f("          output equality with a full prefill (prefix-only reuse): %d of %d requests identical\n", e.Equal, e.Requests)
	p.f("          (logits max |diff| %g, tolerance %g; greedy continuations of %d tokens identical)\n\n", e.MaxLogitDiff, e.Tolerance, e.Tokens)

	r := s.RAG
	p.f("rag       %d stories the model wrote (%s tokens), stored once as shared chunks\n", r.Docs, num(r.DocTokens))
	p.f("          %d prompts of 2-%d stories in varying orders + a cue (tenants alice, bob): %s prompt tokens\n", r.Requests, s.RAG.MaxDocs, num(r.PromptTokens))
	p.f("          reused %s tokens (%s): prefix %s, non-prefix %s (keys re-rotated: %s)\n",
		num(r.Prefix+r.NonPrefix), pct(r.Prefix+r.NonPrefix, r.PromptTokens), num(r.Prefix), num(r.NonPrefix), num(s.Reuse.Rotated))
	b := s.Blended
	p.f("          quality of %d blended requests vs a full prefill, %d continuation positions each:\n", b.Requests, b.Continue)
	p.f("            %-30s %10s %8s %8s %6s %13s %8s\n", "KV used as", "recomputed", "compute", "mean KL", "top-1", "greedy match", "engine")
	for _, q := range b.Policies {
		p.f("            %-30s %9.1f%% %7.1f%% %8.4f %6.3f %9.1f tok %6.0fms\n", q.Policy, 100*q.Fresh, 100*q.Compute, q.MeanKL, q.Top1, q.MatchLen, 1000*q.Seconds)
	}
	p.f("\n")

	rq := s.Requests
	p.f("requests  %d Prepare (%d served, %d segments mapped), %d Lookup (%d agreeing with Prepare), %d Store (%d chunks, %s)\n",
		rq.Prepare, rq.Served, rq.Segments, rq.Lookup, rq.Lookups, rq.Store, rq.Chunks, bytesStr(uint64(rq.Bytes)))
	p.f("reuse     %s of %s prompt tokens reused (%s): prefix %s, non-prefix %s; the daemon counted %s\n",
		num(s.Reuse.Reused), num(s.Reuse.PromptTokens), pct(s.Reuse.Reused, s.Reuse.PromptTokens), num(s.Reuse.Prefix), num(s.Reuse.NonPrefix), num(s.Reuse.Daemon))
	var tiers []string
	for _, t := range s.Tiers {
		name, _, _ := strings.Cut(t.Tier, ":")
		tiers = append(tiers, fmt.Sprintf("%s read %s (%d hits, %d misses), written %s", name, bytesStr(t.BytesRead), t.Hits, t.Misses, bytesStr(t.BytesWritten)))
	}
	p.f("tiers     %s\n", strings.Join(tiers, "; "))
	pf := s.Prefill
	p.f("prefill   the engine's prefill time on the same prompts: full, and over the reused KV (what it served):\n")
	for _, x := range []struct {
		name string
		t    PrefillTimes
	}{{"chat", pf.Chat}, {"rag", pf.RAG}, {"total", pf.Total}} {
		p.f("            %-5s %7.0fms full -> %6.0fms reusing: saved %6.0fms (%4.1f%%); the Prepare calls took %4.0fms\n",
			x.name, 1000*x.t.Full, 1000*x.t.Reuse, 1000*x.t.Saved, 100*x.t.SavedFrac, 1000*x.t.Prepare)
	}
	d := s.Device
	p.f("device    %s: %d requests, %d matches; hot table %d of %d entries after %d control rounds; %d reused ranges matched on the device\n",
		d.Backend, d.Requests, d.Matches, d.TableEntries, d.TableCapacity, d.ControlRounds, d.Ranges)
	ck := s.Checks
	sd := ck.ShutdownRep
	p.f("checks    prefix-only output equal: %s; KV of %d reused ranges verified: %s; daemon counters agree: %s\n",
		ok(ck.PrefixEqual), ck.RangesChecked, ok(ck.KVVerified), ok(ck.CountersAgree))
	p.f("          lookups agree: %s; tenant isolation: %s; blended figures finite: %s\n", ok(ck.LookupAgrees), ok(ck.Isolation), ok(ck.BlendedFinite))
	p.f("          shutdown: %s (flushed %d, partial %d, unflushed %d, cancelled %d); temporary directories removed: %s\n",
		ok(ck.Shutdown), sd.Flushed, sd.Partial, sd.Unflushed, sd.Cancelled, ok(ck.TempRemoved))
	if s.Daemon.KeptDataDir != "" {
		p.f("          data directory kept: %s (the disk tier's chunks and the index journal)\n", s.Daemon.KeptDataDir)
	}
	for _, f := range s.Failures {
		p.f("FAILED    %s\n", f)
	}
	verdict := "all checks passed"
	if !s.OK {
		verdict = fmt.Sprintf("%d checks FAILED", len(s.Failures))
	}
	p.f("\n%s; done in %.1fs\n", verdict, s.Seconds)
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func ok(b bool) string {
	if b {
		return "ok"
	}
	return "FAILED"
}

func num(n int) string { return humanize.Comma(int64(n)) }

func bytesStr(n uint64) string { return humanize.IBytes(n) }

// finite replaces a non-finite figure (which JSON cannot carry) by -1 and
// reports whether it was finite.
func finite(v *float64) bool {
	if math.IsNaN(*v) || math.IsInf(*v, 0) {
		*v = -1
		return false
	}
	return true
}
