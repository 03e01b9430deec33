package quality

import (
	"context"
	"fmt"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// chunkStore holds the evaluation set's chunks as a KV store would: each
// document's KV computed once, after BOS (base position 1), and the KV of
// BOS itself, keyed by matcher.ChunkKeyOf under the model's shared salt.
type chunkStore struct {
	spec     kvcache.ModelSpec
	stitcher *kvcache.Stitcher
	bos      *kvcache.Chunk
	docs     []*kvcache.Chunk
}

func newChunkStore(e *engine.Engine, set *Set) (*chunkStore, error) {
	spec := e.Model().SpecFor(kvcache.F32)
	salt, err := spec.Salt("")
	if err != nil {
		return nil, err
	}
	st, err := kvcache.NewStitcher(&spec)
	if err != nil {
		return nil, err
	}
	cs := &chunkStore{spec: spec, stitcher: st}
	s := e.NewState()
	for i, d := range set.Docs {
		s.Reset()
		toks := append([]engine.Token{engine.TokenBOS}, d.Tokens...)
		if _, err := s.Forward(toks); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		ch, err := s.ExportChunk(1, len(toks), kvcache.F32, salt)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		cs.docs = append(cs.docs, ch)
		if cs.bos == nil {
			if cs.bos, err = s.ExportChunk(0, 1, kvcache.F32, salt); err != nil {
				return nil, err
			}
		}
	}
	return cs, nil
}

// plan is the stitch plan of a prompt's documents: BOS and the first
// document are an exact prefix (computed at these positions after the
// same tokens); every later document is moved from base position 1 to
// where it sits.
func (cs *chunkStore) plan(set *Set, p Prompt) (*kvcache.Plan, []kvcache.ChunkReader) {
	toks := set.Tokens(p)
	docsEnd := len(toks) - len(p.Cue)
	plan := &kvcache.Plan{Prompt: toks[:docsEnd], Keys: []matcher.ChunkKey{cs.bos.Key}}
	sources := []kvcache.ChunkReader{cs.bos}
	plan.Segments = append(plan.Segments, kvcache.Segment{Source: 0, SrcStart: 0, SrcEnd: 1, Dst: 0, Prefix: true})
	dst := 1
	for i, d := range p.Docs {
		ch := cs.docs[d]
		plan.Keys = append(plan.Keys, ch.Key)
		sources = append(sources, ch)
		n := len(ch.Tokens)
		plan.Segments = append(plan.Segments, kvcache.Segment{Source: len(sources) - 1, SrcStart: 0, SrcEnd: n, Dst: dst, Prefix: i == 0})
		dst += n
	}
	return plan, sources
}

// stitch assembles the prompt's documents' KV with kvcache's stitcher
// (keys re-rotated where a document moved).
func (cs *chunkStore) stitch(ctx context.Context, plan *kvcache.Plan, sources []kvcache.ChunkReader) (*kvcache.KV, error) {
	kv, err := kvcache.NewKV(cs.spec.Shape(), len(plan.Prompt))
	if err != nil {
		return nil, err
	}
	if _, err := cs.stitcher.Stitch(ctx, kvcache.StitchRequest{Plan: plan, Sources: sources, Target: kv}); err != nil {
		return nil, err
	}
	return kv, nil
}
