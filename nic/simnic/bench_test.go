package simnic_test

import (
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/workload"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
)

// benchWorkload is real text: the Go distribution's documentation,
// tokenized with cl100k_base, cut into documents that go into the device's
// table, and RAG prompts of about 32K tokens drawn from them.
func benchWorkload(b *testing.B) (entries []nic.Entry, prompts [][]matcher.Token, salt matcher.Salt) {
	b.Helper()
	tok, err := workload.NewTokenizer()
	if err != nil {
		b.Fatalf("tokenizer: %v", err)
	}
	corpus, err := workload.LoadCorpus(b.Context(), workload.CorpusOptions{Source: workload.SourceDocs, CacheDir: workload.DefaultCacheDir(), Tokenizer: tok})
	if err != nil {
		b.Fatalf("load the Go documentation corpus: %v", err)
	}
	salt, err = matcher.NewSalt(workload.ModelFingerprint(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	seen := map[matcher.ChunkKey]bool{}
	for _, d := range corpus.Docs {
		if len(d.Tokens) < 64 || len(d.Tokens) > simnic.DefaultMaxEntryTokens {
			continue
		}
		k := matcher.ChunkKeyOf(salt, d.Tokens)
		if !seen[k] {
			seen[k] = true
			entries = append(entries, nic.Entry{Salt: salt, Key: k, Tokens: d.Tokens, Rank: 1})
		}
	}
	rag, err := workload.NewRAG(corpus, tok, workload.RAGOptions{Seed: 1, TargetTokens: 32 << 10})
	if err != nil {
		b.Fatal(err)
	}
	for range 8 {
		p, err := rag.Next()
		if err != nil {
			b.Fatal(err)
		}
		prompts = append(prompts, p.Tokens)
	}
	return entries, prompts, salt
}

// BenchmarkRegisterPath is the simulator's functional throughput: prompt
// tokens matched per second through the whole register path (the driver
// writes tokens and a descriptor into card memory, rings the doorbell, the
// model reads them, matches with the matcher, posts completions, the driver
// reads them and delivers events), as a ratio to calling the matcher's
// FindAll on the same index and prompts, measured in the same run.
//
// serial submits one prompt at a time and waits for it: its x-vs-findall is
// the cost of the register path (the issue allows at most 2×, a ratio
// ≥ 0.5). pipelined keeps all eight prompts in flight, as a daemon serving
// several engines does; the host's copying then overlaps the device's
// matching, so its ratio can exceed 1 on a machine with two cores.
func BenchmarkRegisterPath(b *testing.B) {
	entries, prompts, salt := benchWorkload(b)
	d, err := simnic.New(b.Context(), simnic.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	info := d.Info()
	if len(entries) > info.TableCapacity {
		entries = entries[:info.TableCapacity]
	}
	if err := d.PushIndex(b.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		b.Fatalf("push %d entries: %v", len(entries), err)
	}
	ix, err := matcher.New(info.Matcher)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if _, err := ix.Add(matcher.Entry{Salt: e.Salt, Tokens: e.Tokens}); err != nil {
			b.Fatal(err)
		}
	}
	var tokens, matches int
	for _, p := range prompts {
		tokens += len(p)
		ms, err := ix.FindAll(salt, p)
		if err != nil {
			b.Fatal(err)
		}
		matches += len(ms)
	}
	if matches == 0 {
		b.Fatal("the workload's prompts match nothing: the benchmark would measure no matching")
	}
	findAll := benchutil.Baseline{
		PerOp: float64(tokens),
		Op: func() {
			for _, p := range prompts {
				if _, err := ix.FindAll(salt, p); err != nil {
					panic(err)
				}
			}
		},
	}
	// drain reads one request's events, counting matches and device time.
	drain := func(b *testing.B, ch <-chan nic.Event, got *int, dt *time.Duration) {
		for ev := range ch {
			switch ev.Kind {
			case nic.EventMatch:
				*got++
			case nic.EventDone:
				*dt += ev.DeviceTime
			case nic.EventError:
				b.Fatal(ev.Err)
			}
		}
	}
	report := func(b *testing.B, got int, dt time.Duration) {
		if got != matches {
			b.Fatalf("the device reported %d matches, FindAll %d", got, matches)
		}
		benchutil.ReportRate(b, "tokens/s", float64(tokens))
		// The simulated card's own speed, in virtual time: what the
		// pipeline model says the hardware would do.
		b.ReportMetric(float64(tokens)*float64(b.N)/dt.Seconds(), "device-tokens/s")
		benchutil.ReportRatio(b, "x-vs-findall", float64(tokens), findAll)
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(4 * tokens))
		b.ReportAllocs()
		var got int
		var dt time.Duration
		for b.Loop() {
			got = 0
			for i, p := range prompts {
				ch, err := d.Submit(b.Context(), nic.Request{ID: uint64(i), Salt: salt, Tokens: p})
				if err != nil {
					b.Fatal(err)
				}
				drain(b, ch, &got, &dt)
			}
		}
		report(b, got, dt)
	})
	b.Run("pipelined", func(b *testing.B) {
		b.SetBytes(int64(4 * tokens))
		b.ReportAllocs()
		var got int
		var dt time.Duration
		chans := make([]<-chan nic.Event, len(prompts))
		for b.Loop() {
			got = 0
			for i, p := range prompts {
				ch, err := d.Submit(b.Context(), nic.Request{ID: uint64(i), Salt: salt, Tokens: p})
				if err != nil {
					b.Fatal(err)
				}
				chans[i] = ch
			}
			for _, ch := range chans {
				drain(b, ch, &got, &dt)
			}
		}
		report(b, got, dt)
	})
}
