package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/engine/quality"
	"github.com/kvloom/kvloom/hostctl/api"
)

// chat runs the multi-turn conversations. Each turn's prompt is the
// previous prompt, the model's reply and a new user text; after answering,
// the engine stores the sequence it computed (prompt and reply), so the
// next turn's Prepare hands back its prefix blocks.
func (r *runner) chat(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(r.opts.Seed, 0x63686174))
	seqLen := r.e.Config().SeqLen
	for conv := range r.opts.Conversations {
		tenant := tenants[conv%len(tenants)]
		opening := quality.Openings[(conv+int(r.opts.Seed))%len(quality.Openings)]
		prompt := r.tok.Encode(opening, true, false)
		var reply []engine.Token
		for turn := range r.opts.Turns {
			if turn > 0 {
				user := r.tok.Encode(userTexts[rng.IntN(len(userTexts))], false, false)
				prompt = append(append(slices.Clip(prompt), reply...), user...)
			}
			if len(prompt)+r.opts.Reply > seqLen {
				return fmt.Errorf("conversation %d turn %d: a %d-token prompt and a %d-token reply exceed the model's %d positions; use fewer turns or shorter replies: %w",
					conv, turn, len(prompt), r.opts.Reply, seqLen, ErrOptions)
			}
			label := fmt.Sprintf("chat %d turn %d", conv, turn)
			var err error
			q := request{label: label, tenant: tenant, toks: prompt, n: r.opts.Reply, w: &r.sum.Chat, pf: &r.sum.Prefill.Chat}
			if reply, err = r.serve(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", label, err)
			}
			if err := r.cl.store(ctx, tenant, false, r.cl.kept, nil); err != nil {
				return fmt.Errorf("%s: %w", label, err)
			}
			r.last[tenant] = prompt
			r.step(fmt.Sprintf("chat %d/%d", conv+1, r.opts.Conversations))
		}
	}
	return nil
}

// rag stores the documents once, shared by every tenant, then serves the
// prompts built from them.
func (r *runner) rag(ctx context.Context) error {
	set, err := quality.NewSet(ctx, r.e, r.tok, quality.SetOptions{
		Docs: r.opts.Docs, Prompts: r.opts.Prompts, MinDocs: 2, MaxDocs: r.opts.MaxDocs,
		MinTokens: minChunkTokens, Continue: r.opts.Continue, Seed: r.opts.Seed,
	})
	if err != nil {
		return err
	}
	w := &r.sum.RAG
	w.Docs = len(set.Docs)
	st := r.cl.full
	for i, d := range set.Docs {
		// A document is stored as it is computed alone, after BOS: its
		// prefix blocks serve prompts that start with it, the declared
		// chunk serves it anywhere else.
		st.Reset()
		if _, err := st.Forward(append([]engine.Token{engine.TokenBOS}, d.Tokens...)); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if err := r.cl.store(ctx, "library", true, st, []*api.ChunkSpan{{Start: 1, Length: int32(len(d.Tokens))}}); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		w.DocTokens += len(d.Tokens)
		r.step(fmt.Sprintf("rag store %d/%d", i+1, len(set.Docs)))
	}
	for i, p := range set.Prompts {
		label := fmt.Sprintf("rag prompt %d (%d documents)", i, len(p.Docs))
		q := request{label: label, tenant: tenants[i%len(tenants)], toks: set.Tokens(p), n: r.opts.Continue, w: w, pf: &r.sum.Prefill.RAG}
		if _, err := r.serve(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		r.step(fmt.Sprintf("rag %d/%d", i+1, len(set.Prompts)))
	}
	return nil
}
