package demo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/engine/quality"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
)

// tenants take turns: chats are private to theirs, RAG documents are shared.
var tenants = []string{"alice", "bob"}

// Run starts the embedded daemon, runs the chat and RAG workloads through
// its API with the reference engine, gathers the daemon's counters, shuts
// it down and removes its directories. It returns the summary and, when a
// check failed, an error wrapping ErrCheck (the summary says which). A
// failed API call or engine error ends the run with that error and no
// summary; the daemon is shut down and its directories removed all the same.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	start := time.Now()
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	e, tok, err := engine.Open(opts.ModelDir)
	if err != nil {
		return nil, err
	}
	model, models, err := modelConfig(e, opts.ModelDir)
	if err != nil {
		return nil, err
	}
	em, err := startDaemon(ctx, &opts, models)
	if err != nil {
		return nil, err
	}
	cl, err := newClient(e, em.c, model)
	if err != nil {
		rep := em.stop(ctx, opts.Keep)
		return nil, errors.Join(err, rep.Err, rep.ServeErr)
	}
	r := &runner{opts: opts, e: e, tok: tok, em: em, cl: cl, sum: &Summary{}, last: map[string][]engine.Token{}}
	r.stitched.name, r.cacheblend.name = "stitched (no recompute)", "engine CacheBlend"
	werr := r.workloads(ctx)
	r.progressDone()
	rep := em.stop(ctx, opts.Keep)
	if werr != nil {
		return nil, errors.Join(werr, rep.Err, rep.ServeErr)
	}
	r.finish(rep, time.Since(start))
	if !r.sum.OK {
		return r.sum, fmt.Errorf("%d of the demo's checks: %w", len(r.sum.Failures), ErrCheck)
	}
	return r.sum, nil
}

// runner is one demo run.
type runner struct {
	opts Options
	e    *engine.Engine
	tok  *engine.Tokenizer
	em   *embedded
	cl   *client
	bar  *progressbar.ProgressBar
	sum  *Summary

	plan, stitched, cacheblend qualityAcc
	// last is each tenant's latest chat prompt (the isolation check).
	last map[string][]engine.Token
}

func (r *runner) failf(format string, args ...any) {
	r.sum.Failures = append(r.sum.Failures, fmt.Sprintf(format, args...))
}

func (r *runner) workloads(ctx context.Context) error {
	if err := r.describe(ctx); err != nil {
		return err
	}
	if r.opts.Progress != nil {
		total := r.opts.Conversations*r.opts.Turns + r.opts.Docs + r.opts.Prompts
		r.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(r.opts.Progress), progressbar.OptionSetDescription("chat"),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(32), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(50*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
	}
	if err := r.chat(ctx); err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if err := r.rag(ctx); err != nil {
		return fmt.Errorf("rag: %w", err)
	}
	return r.collect(ctx)
}

// describe fills in the model and the daemon's setup.
func (r *runner) describe(ctx context.Context) error {
	c := r.e.Config()
	fp := r.e.Model().Spec.Fingerprint()
	r.sum.Model = ModelInfo{Name: r.cl.model, Dir: r.opts.ModelDir, Fingerprint: fmt.Sprintf("%x", fp[:8]), Layers: c.Layers, SeqLen: c.SeqLen}
	cfg := r.em.cfg
	rec := r.opts.Recompute
	if rec == "" {
		rec = cfg.Recompute
	}
	d := DaemonInfo{Socket: "unix://" + cfg.SocketPath(), Tiers: cfg.TierSpec(), Recompute: rec, ChunkTokens: cfg.ChunkTokens,
		MinChunkTokens: cfg.MinChunkTokens, ControlInterval: cfg.Control.Interval.String(), DataDir: cfg.DataDir, SegmentDir: cfg.Limits.SegmentDir}
	st, err := r.em.c.Status(ctx, &api.StatusRequest{})
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	for _, b := range st.Backends {
		desc := b.Kind
		if !b.Up {
			desc += " (down: " + b.Reason + ")"
		}
		switch b.Name {
		case "device":
			d.Device = desc
		case "dma":
			d.DMA = desc
		}
	}
	r.sum.Daemon = d
	return nil
}

func (r *runner) step(desc string) {
	if r.bar == nil {
		return
	}
	r.bar.Describe(desc)
	// A terminal that stops taking the bar does not stop the demo.
	_ = r.bar.Add(1)
}

func (r *runner) progressDone() {
	if r.bar != nil {
		_ = r.bar.Finish()
	}
}

// request is one prompt to serve, and where its figures go.
type request struct {
	label, tenant string
	toks          []engine.Token
	// n is the continuation: the reply (chat), the positions scored (RAG).
	n  int
	w  *Workload
	pf *PrefillTimes
}

// serve is one request as an engine serves it: Prepare, map the segment,
// prefill over it, continue n tokens (the reply, greedy); and as the demo
// checks it: the full prefill beside it, every reused range's KV, output
// equality for prefix-only reuse and quality for blended reuse. It returns
// the engine's greedy reply; the sequence behind it is in r.cl.kept.
func (r *runner) serve(ctx context.Context, q request) (reply []engine.Token, err error) {
	cl, w, pf, label, toks := r.cl, q.w, q.pf, q.label, q.toks
	tenant, n := q.tenant, q.n
	p, err := cl.prepare(ctx, tenant, toks, r.opts.Recompute)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := cl.release(ctx, p); rerr != nil && err == nil {
			err = rerr
		}
	}()
	ref, err := cl.reference(toks, n)
	if err != nil {
		return nil, err
	}
	r.sum.Checks.RangesChecked += len(p.plan.Ranges)
	for _, msg := range cl.verifyKV(p, toks) {
		r.failf("%s: %s", label, msg)
	}
	prefix, chunk := p.reused()
	w.Requests++
	w.PromptTokens += len(toks)
	w.Prefix += prefix
	w.NonPrefix += chunk
	if prefix+chunk > 0 {
		w.WithReuse++
	}
	ru := &r.sum.Reuse
	ru.PromptTokens += len(toks)
	ru.Prefix += prefix
	ru.NonPrefix += chunk
	ru.Reused += prefix + chunk
	ru.Rotated += int(p.done.GetRotatedTokens())
	for _, rg := range p.plan.Ranges {
		if rg.Device {
			r.sum.Device.Ranges++
		}
	}
	pf.Full += ref.took.Seconds()
	pf.Prepare += p.took.Seconds()
	r.sum.Requests.Served++
	if p.seg == nil {
		// Nothing reusable: the engine's prefill is the full one.
		pf.Reuse += ref.took.Seconds()
		return ref.cont, nil
	}
	r.sum.Requests.Segments++
	run, err := cl.run(ctx, p, toks, ref, pathSpec{kind: pathPlan, keep: true})
	if err != nil {
		return nil, err
	}
	pf.Reuse += run.took.Seconds()
	if chunk == 0 {
		_, _, match, maxDiff := score(ref, run)
		eq := &r.sum.PrefixOnly
		eq.Requests++
		eq.MaxLogitDiff = math.Max(eq.MaxLogitDiff, maxDiff)
		eq.Tokens = max(eq.Tokens, len(ref.cont))
		if maxDiff <= LogitTolerance && match == len(ref.cont) && len(run.greedy) == len(ref.cont) {
			eq.Equal++
		} else {
			r.failf("%s: prefix-only reuse of %d tokens differs from the full prefill: max |logit diff| %g (tolerance %g), greedy continuation equal for %d of %d tokens",
				label, prefix, maxDiff, LogitTolerance, match, len(ref.cont))
		}
		return run.greedy, nil
	}
	// Non-prefix reuse: the daemon's plan is what the engine served; the
	// stitched KV alone and CacheBlend's own selection show what the
	// recompute buys.
	b := &r.sum.Blended
	b.Requests++
	layers := r.e.Config().Layers
	if r.plan.name == "" {
		r.plan.name = "daemon plan " + p.plan.RecomputePolicy
	}
	r.plan.add(ref, run, len(toks), layers)
	ratio := 0.15
	if pol, err := kvcache.ParsePolicy(p.plan.RecomputePolicy); err == nil && pol.Kind == kvcache.PolicyRatio {
		ratio = pol.Ratio
	}
	r.cacheblend.name = fmt.Sprintf("engine CacheBlend ratio:%g", ratio)
	for _, x := range []struct {
		kind pathKind
		acc  *qualityAcc
	}{{pathStitched, &r.stitched}, {pathCacheBlend, &r.cacheblend}} {
		run2, err := cl.run(ctx, p, toks, ref, pathSpec{kind: x.kind, ratio: ratio})
		if err != nil {
			return nil, err
		}
		x.acc.add(ref, run2, len(toks), layers)
	}
	return run.greedy, nil
}

// collect waits for the write-back queue to drain (so the disk tier's
// bytes show), then reads the daemon's counters, its device, and checks
// tenant isolation.
func (r *runner) collect(ctx context.Context) error {
	c := r.em.c
	var st *api.StatsResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if st, err = c.Stats(ctx, &api.StatsRequest{}); err != nil {
			return fmt.Errorf("stats: %w", err)
		}
		if st.WritebackQueued == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, t := range st.Tiers {
		r.sum.Tiers = append(r.sum.Tiers, Tier{Tier: t.Tier, Hits: t.Hits, Misses: t.Misses, BytesRead: t.BytesRead, BytesWritten: t.BytesWritten})
	}
	r.sum.Requests.Daemon = int(st.Prepares)
	r.sum.Reuse.Daemon = int(st.ReusedTokens)
	r.sum.Device.ControlRounds = int(st.GetControl().GetRounds())
	devs, err := c.Devices(ctx, &api.DevicesRequest{})
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	for _, d := range devs.Devices {
		if d.Active {
			r.sum.Device.Backend = d.Kind
			r.sum.Device.Requests, r.sum.Device.Matches = d.Requests, d.Matches
			r.sum.Device.TableEntries, r.sum.Device.TableCapacity = int(d.TableEntries), int(d.TableCapacity)
		}
	}
	// Isolation: bob looks up alice's last conversation. He may reuse what
	// is shared, never her history: no more than carol, who stored nothing.
	toks := r.last[tenants[0]]
	reusable := map[string]int32{}
	for _, t := range []string{"alice", "bob", "carol"} {
		lk, err := c.Lookup(ctx, &api.LookupRequest{Tenant: t, Model: r.cl.model, Tokens: toks})
		if err != nil {
			return fmt.Errorf("lookup as %s: %w", t, err)
		}
		r.cl.rpc.lookups++
		reusable[t] = lk.ReusableTokens
	}
	// Alice stored her last prompt's whole blocks (and more) herself.
	own := int32(len(toks) / chunkTokens * chunkTokens)
	r.sum.Checks.Isolation = reusable["alice"] >= own && reusable["bob"] == reusable["carol"]
	if !r.sum.Checks.Isolation {
		r.failf("isolation: on alice's last conversation alice reuses %d tokens, bob %d, carol (nothing stored) %d; want alice >= %d and bob = carol",
			reusable["alice"], reusable["bob"], reusable["carol"], own)
	}
	return nil
}

// finish turns the counters into the summary's figures and verdicts.
func (r *runner) finish(rep shutdownReport, took time.Duration) {
	s := r.sum
	rpc := r.cl.rpc
	s.Requests.Prepare, s.Requests.Lookup, s.Requests.Store, s.Requests.Release = rpc.prepares, rpc.lookups, rpc.stores, rpc.releases
	s.Requests.Chunks, s.Requests.Bytes, s.Requests.Lookups = rpc.storeChunks, int(rpc.storeBytes), rpc.lookupAgree
	s.Daemon.KeptDataDir = rep.Kept
	s.Chat.Conversations, s.Chat.Turns = r.opts.Conversations, r.opts.Turns
	s.RAG.MaxDocs = r.opts.MaxDocs
	s.PrefixOnly.Tolerance = LogitTolerance
	s.Blended.Continue = r.opts.Continue
	for _, pf := range []*PrefillTimes{&s.Prefill.Chat, &s.Prefill.RAG} {
		pf.Saved = pf.Full - pf.Reuse
		s.Prefill.Total.Full += pf.Full
		s.Prefill.Total.Reuse += pf.Reuse
		s.Prefill.Total.Prepare += pf.Prepare
	}
	s.Prefill.Total.Saved = s.Prefill.Total.Full - s.Prefill.Total.Reuse
	for _, pf := range []*PrefillTimes{&s.Prefill.Chat, &s.Prefill.RAG, &s.Prefill.Total} {
		if pf.Full > 0 {
			pf.SavedFrac = pf.Saved / pf.Full
		}
	}
	s.Checks.BlendedFinite = true
	for _, a := range []*qualityAcc{&r.stitched, &r.plan, &r.cacheblend} {
		if a.reqs == 0 {
			continue
		}
		row := a.row()
		for _, v := range []*float64{&row.MeanKL, &row.KLErr, &row.Top1, &row.MatchLen, &row.Fresh, &row.Compute} {
			if !finite(v) {
				s.Checks.BlendedFinite = false
			}
		}
		s.Blended.Policies = append(s.Blended.Policies, row)
	}
	if !s.Checks.BlendedFinite {
		r.failf("a blended quality figure is not a number")
	}

	ck := &s.Checks
	ck.PrefixEqual = s.PrefixOnly.Requests > 0 && s.PrefixOnly.Equal == s.PrefixOnly.Requests
	if s.PrefixOnly.Requests == 0 {
		r.failf("no request reused a prefix only: nothing showed output equality")
	}
	ck.KVVerified = ck.RangesChecked > 0 && !r.kvFailed()
	ck.CountersAgree = s.Requests.Daemon == s.Requests.Prepare && s.Reuse.Daemon == s.Reuse.Reused
	if !ck.CountersAgree {
		r.failf("the daemon counted %d prepares and %d reused tokens; the engine made %d and was handed %d",
			s.Requests.Daemon, s.Reuse.Daemon, s.Requests.Prepare, s.Reuse.Reused)
	}
	ck.LookupAgrees = rpc.lookupAgree == rpc.prepares
	if !ck.LookupAgrees {
		r.failf("%d of %d Lookups promised other than the Prepare after them reused", rpc.prepares-rpc.lookupAgree, rpc.prepares)
	}
	if s.Chat.Prefix+s.Chat.NonPrefix == 0 || s.RAG.Prefix+s.RAG.NonPrefix == 0 || s.RAG.NonPrefix == 0 {
		r.failf("reuse: chat %d tokens, RAG %d (non-prefix %d); want both > 0, RAG non-prefix > 0",
			s.Chat.Prefix+s.Chat.NonPrefix, s.RAG.Prefix+s.RAG.NonPrefix, s.RAG.NonPrefix)
	}

	sd := &ck.ShutdownRep
	sd.Flushed, sd.Partial, sd.Unflushed, sd.Cancelled = rep.Flushed, rep.Partial, rep.Unflushed, rep.Cancelled
	sd.Errors = rep.Errors
	ck.Shutdown = rep.Err == nil && rep.ServeErr == nil && rep.Unflushed == 0 && rep.Partial == 0 && rep.Cancelled == 0
	if !ck.Shutdown {
		r.failf("shutdown: %v; serve: %v; unflushed %d, partial %d, cancelled %d", rep.Err, rep.ServeErr, rep.Unflushed, rep.Partial, rep.Cancelled)
	}
	ck.TempRemoved = rep.Removed
	if !rep.Removed {
		r.failf("the daemon's temporary directories were not all removed (%s)", r.em.root)
	}
	s.OK = len(s.Failures) == 0
	if s.Failures == nil {
		s.Failures = []string{}
	}
	s.Seconds = took.Seconds()
}

// kvFailed reports whether a reused range failed its KV check.
func (r *runner) kvFailed() bool { return r.cl.kvBad > 0 }

// qualityAcc gathers one way of using reused KV over the blended requests.
type qualityAcc struct {
	name           string
	kl             []float64
	top1, n        int
	match          float64
	fresh, compute float64
	took           time.Duration
	reqs           int
}

func (a *qualityAcc) add(ref *refRun, run *pathRun, promptLen, layers int) {
	kl, top1, match, _ := score(ref, run)
	a.kl = append(a.kl, kl)
	a.top1 += top1
	a.n += len(ref.logits)
	a.match += float64(match)
	st := run.stats
	a.fresh += float64(len(st.Recomputed)+st.New) / float64(promptLen)
	work := st.New * layers
	for _, rows := range st.RowsPerLayer {
		work += rows
	}
	a.compute += float64(work) / float64(promptLen*layers)
	a.took += run.took
	a.reqs++
}

func (a *qualityAcc) row() QualityRow {
	n := float64(a.reqs)
	mean, se := quality.MeanStdErr(a.kl)
	return QualityRow{
		Policy: a.name, MeanKL: mean, KLErr: se, Top1: float64(a.top1) / float64(max(a.n, 1)),
		MatchLen: a.match / n, Fresh: a.fresh / n, Compute: a.compute / n, Seconds: a.took.Seconds(),
	}
}
