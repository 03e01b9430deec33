package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/workload"
)

// matchFixture writes documents cut from the Go memory model (real text
// on every machine with Go), a system prompt file and a prompts file.
type matchFixture struct {
	docs, prompts, system string
	docText               []string
	docTokens             [][]uint32
	sysTokens             []uint32
}

func newMatchFixture(t *testing.T) *matchFixture {
	t.Helper()
	root, err := workload.GoRoot(t.Context())
	if err != nil {
		t.Fatalf("the match test reads the Go distribution's doc/go_mem.html: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(root, "doc", "go_mem.html"))
	if err != nil {
		t.Fatalf("read go_mem.html: %v", err)
	}
	paras := strings.SplitAfter(string(b), "\n\n")
	if len(paras) < 40 {
		t.Fatalf("go_mem.html has %d paragraphs, want at least 40", len(paras))
	}
	tok, err := workload.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &matchFixture{docs: filepath.Join(dir, "docs"), prompts: filepath.Join(dir, "prompts.jsonl"), system: filepath.Join(dir, "system.txt")}
	if err := os.MkdirAll(filepath.Join(f.docs, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a.txt", "b.txt", "sub/c.txt"} {
		text := strings.Join(paras[10+8*i:18+8*i], "")
		f.docText = append(f.docText, text)
		if err := os.WriteFile(filepath.Join(f.docs, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		toks, err := tok.Encode(text)
		if err != nil {
			t.Fatal(err)
		}
		f.docTokens = append(f.docTokens, toks)
	}
	// Skipped: too short, and not text.
	if err := os.WriteFile(filepath.Join(f.docs, "short.txt"), []byte("tiny"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.docs, "blob.bin"), []byte{0xff, 0xfe, 0x00, 0x80}, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.system, []byte(workload.SystemPrompt), 0o644); err != nil {
		t.Fatal(err)
	}
	if f.sysTokens, err = tok.Encode(workload.SystemPrompt); err != nil {
		t.Fatal(err)
	}
	// q1: the system prompt then document b as token ids (exact);
	// q2: a question, then document a's text; q3: nothing indexed.
	q1 := slices.Concat(f.sysTokens, []uint32{198}, f.docTokens[1])
	prompts := []workload.InputPrompt{
		{ID: "q1", Tokens: q1},
		{ID: "q2", Text: "Which rules apply here?\n\n" + f.docText[0]},
		{ID: "q3", Text: "A prompt about something else entirely, with nothing indexed in it."},
	}
	pf, err := os.Create(f.prompts)
	if err != nil {
		t.Fatal(err)
	}
	if err := workload.FormatPrompts(pf, prompts); err != nil {
		t.Fatal(err)
	}
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMatchJSON(t *testing.T) {
	f := newMatchFixture(t)
	out, err := runCLI(t, "match", "--docs", f.docs, "--prompts", f.prompts, "--prefix", f.system, "--block-size", "64", "--json")
	if err != nil {
		t.Fatalf("kvloom match: %v\n%s", err, out)
	}
	var rep workload.MatchResult
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, out)
	}
	if rep.Documents != 3 || rep.Prefixes != 1 || len(rep.Skipped) != 2 || len(rep.Prompts) != 3 {
		t.Fatalf("report: %d documents, %d prefixes, %d skipped, %d prompts; want 3, 1, 2, 3", rep.Documents, rep.Prefixes, len(rep.Skipped), len(rep.Prompts))
	}
	q1, q2, q3 := rep.Prompts[0], rep.Prompts[1], rep.Prompts[2]

	// q1: prefix blocks of the system prompt, then all of document b.
	sysBlocks := len(f.sysTokens) / 64 * 64
	wantCover := []workload.FoundMatch{
		{ReqOff: 0, Len: sysBlocks, Doc: "system.txt", Prefix: true},
		{ReqOff: len(f.sysTokens) + 1, Len: len(f.docTokens[1]), Doc: "b.txt", ChunkOff: 0},
	}
	if len(q1.Cover) != 2 {
		t.Fatalf("q1 cover %+v, want %+v", q1.Cover, wantCover)
	}
	for i, w := range wantCover {
		c := q1.Cover[i]
		if c.ReqOff != w.ReqOff || c.Len != w.Len || c.Doc != w.Doc || c.Prefix != w.Prefix || c.ChunkOff != w.ChunkOff || len(c.Chunk) != 32 {
			t.Fatalf("q1 cover[%d] = %+v, want %+v", i, c, w)
		}
	}
	if q1.Reused != sysBlocks+len(f.docTokens[1]) || q1.Tokens != len(f.sysTokens)+1+len(f.docTokens[1]) {
		t.Fatalf("q1 reused %d of %d tokens", q1.Reused, q1.Tokens)
	}
	// q2: document a, retokenized inside a larger text: all of it but at
	// most the tokens at its edges, where BPE may merge across the join.
	if len(q2.Cover) != 1 || q2.Cover[0].Doc != "a.txt" || q2.Cover[0].Len < len(f.docTokens[0])-3 {
		t.Fatalf("q2 cover %+v, want nearly all %d tokens of a.txt", q2.Cover, len(f.docTokens[0]))
	}
	if q2.ReusedFraction < 0.9 || q2.ReusedFraction > 1 {
		t.Fatalf("q2 reused fraction %v", q2.ReusedFraction)
	}
	if len(q3.Matches) != 0 || q3.Reused != 0 || q3.ReusedFraction != 0 {
		t.Fatalf("q3 has nothing indexed, got %+v", q3)
	}
}

func TestMatchText(t *testing.T) {
	f := newMatchFixture(t)
	out, err := runCLI(t, "match", "--docs", f.docs, "--prompts", f.prompts)
	if err != nil {
		t.Fatalf("kvloom match: %v\n%s", err, out)
	}
	for _, want := range []string{
		"indexed 3 documents",
		"skipped blob.bin: not UTF-8 text",
		"skipped short.txt:",
		"prompt q1: ",
		"chunk  b.txt [0,",
		"prompt q3: ",
		"reuses 0 tokens (0.0%)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestMatchErrors(t *testing.T) {
	f := newMatchFixture(t)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"id\":\"ok\",\"text\":\"fine\"}\n{\"id\":\"x\",\"txt\":\"typo\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no docs", []string{"match", "--prompts", f.prompts}, true, "--docs"},
		{"bad block size", []string{"match", "--docs", f.docs, "--prompts", f.prompts, "--block-size", "8"}, true, "BlockSize"},
		{"malformed prompts", []string{"match", "--docs", f.docs, "--prompts", bad}, false, "line 2"},
		{"missing prompts file", []string{"match", "--docs", f.docs, "--prompts", filepath.Join(t.TempDir(), "none")}, false, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("error %v; want one mentioning %q, usage=%v", err, tc.want, tc.usage)
			}
		})
	}
}
