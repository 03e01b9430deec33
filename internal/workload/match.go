package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/kvloom/kvloom/matcher"
)

// MatchOptions configure RunMatch.
type MatchOptions struct {
	// Docs is a directory: every regular file under it (recursively, in
	// lexical order) is a document, tokenized with cl100k_base and indexed
	// as a position-independent chunk.
	Docs string
	// Prompts is a prompts file (see ParsePrompts).
	Prompts string
	// Prefixes are files indexed as prefix chains (a system prompt, say).
	Prefixes []string
	// JSON selects one JSON object on w instead of text.
	JSON bool
	// Matcher configures the index; Vocab defaults to cl100k_base's.
	Matcher matcher.Options
	// Tokenizer to use; nil means a new one.
	Tokenizer *Tokenizer
}

// MatchResult is what RunMatch reports (the JSON form of its output).
type MatchResult struct {
	Documents int            `json:"documents"`
	Tokens    int64          `json:"document_tokens"`
	Prefixes  int            `json:"prefixes"`
	Skipped   []SkippedFile  `json:"skipped,omitempty"`
	Prompts   []PromptResult `json:"prompts"`
}

// SkippedFile is a document RunMatch did not index, and why.
type SkippedFile struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// PromptResult is one prompt's result.
type PromptResult struct {
	ID             string       `json:"id"`
	Tokens         int          `json:"tokens"`
	Matches        []FoundMatch `json:"matches"`
	Cover          []FoundMatch `json:"cover"`
	Truncated      bool         `json:"truncated,omitempty"`
	Reused         int          `json:"reused"`
	ReusedFraction float64      `json:"reused_fraction"`
}

// FoundMatch is one match, named by the document (file name relative to
// the documents directory, or prefix file's base name) it came from.
type FoundMatch struct {
	ReqOff   int    `json:"req_off"`
	Len      int    `json:"len"`
	Doc      string `json:"doc"`
	ChunkOff int    `json:"chunk_off"`
	Chunk    string `json:"chunk"`
	Prefix   bool   `json:"prefix,omitempty"`
}

// RunMatch indexes the documents and prefix files, matches every prompt
// and writes, per prompt, the matches, the cover and the reused fraction.
func RunMatch(ctx context.Context, w io.Writer, opts MatchOptions) error {
	if opts.Docs == "" || opts.Prompts == "" {
		return fmt.Errorf("match: both a documents directory and a prompts file are needed")
	}
	tok := opts.Tokenizer
	if tok == nil {
		var err error
		if tok, err = NewTokenizer(); err != nil {
			return err
		}
	}
	mo := opts.Matcher
	if mo.Vocab == 0 {
		mo.Vocab = Vocab
	}
	ix, err := matcher.New(mo)
	if err != nil {
		return fmt.Errorf("match: %w", err)
	}
	salt, err := matcher.SharedSalt(ModelFingerprint())
	if err != nil {
		return err
	}
	f, err := os.Open(opts.Prompts)
	if err != nil {
		return fmt.Errorf("match: %w", err)
	}
	inputs, err := ParsePrompts(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("match: prompts file %s: %w", opts.Prompts, err)
	}

	rep := MatchResult{}
	names := map[matcher.ChunkKey]string{}
	minLen := ix.Options().MinLen
	var files []string
	err = filepath.WalkDir(opts.Docs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("match: documents: %w", err)
	}
	var entries []matcher.Entry
	var entryNames []string
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, _ := filepath.Rel(opts.Docs, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("match: %w", err)
		}
		if !utf8.Valid(b) {
			rep.Skipped = append(rep.Skipped, SkippedFile{name, "not UTF-8 text"})
			continue
		}
		toks, err := tok.Encode(string(b))
		if err != nil {
			return fmt.Errorf("match: document %s: %w", name, err)
		}
		if len(toks) < minLen {
			rep.Skipped = append(rep.Skipped, SkippedFile{name, fmt.Sprintf("%d tokens, shorter than the minimum match of %d", len(toks), minLen)})
			continue
		}
		entries = append(entries, matcher.Entry{Salt: salt, Tokens: toks})
		entryNames = append(entryNames, filepath.ToSlash(name))
		rep.Documents++
		rep.Tokens += int64(len(toks))
	}
	for _, p := range opts.Prefixes {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("match: prefix: %w", err)
		}
		toks, err := tok.Encode(string(b))
		if err != nil {
			return fmt.Errorf("match: prefix %s: %w", p, err)
		}
		entries = append(entries, matcher.Entry{Salt: salt, Tokens: toks, Prefix: true})
		entryNames = append(entryNames, filepath.Base(p))
		rep.Prefixes++
	}
	keys, err := ix.Add(entries...)
	if err != nil {
		return fmt.Errorf("match: index: %w", err)
	}
	name := func(k matcher.ChunkKey, n string) {
		if _, dup := names[k]; !dup {
			names[k] = n
		}
	}
	for i, k := range keys {
		name(k, entryNames[i])
	}
	// A prefix match ends at some block of a chain, maybe not its last: its
	// key is that block's, so name every block key not already named, in
	// entry order (the first chain holding those blocks).
	for i, e := range entries {
		if !e.Prefix {
			continue
		}
		blocks, err := matcher.PrefixKeys(salt, e.Tokens, ix.Options().BlockSize, nil)
		if err != nil {
			return fmt.Errorf("match: prefix %s: %w", entryNames[i], err)
		}
		for _, k := range blocks {
			name(k, entryNames[i])
		}
	}
	for _, in := range inputs {
		if err := ctx.Err(); err != nil {
			return err
		}
		toks := in.Tokens
		if toks == nil {
			if toks, err = tok.Encode(in.Text); err != nil {
				return fmt.Errorf("match: prompt %s: %w", in.ID, err)
			}
		}
		res, err := ix.Find(salt, toks, nil)
		if err != nil {
			return fmt.Errorf("match: prompt %s: %w", in.ID, err)
		}
		pr := PromptResult{ID: in.ID, Tokens: len(toks), Truncated: res.Truncated, Matches: []FoundMatch{}, Cover: []FoundMatch{}}
		for _, m := range res.Matches {
			pr.Matches = append(pr.Matches, reportMatch(m, names))
		}
		cover := matcher.Cover(res.Matches)
		for _, m := range cover {
			pr.Cover = append(pr.Cover, reportMatch(m, names))
		}
		pr.Reused = matcher.Reused(cover)
		pr.ReusedFraction = float64(pr.Reused) / float64(len(toks))
		rep.Prompts = append(rep.Prompts, pr)
	}
	if opts.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeMatchText(w, rep)
}

func reportMatch(m matcher.Match, names map[matcher.ChunkKey]string) FoundMatch {
	return FoundMatch{ReqOff: m.ReqOff, Len: m.Len, Doc: names[m.Chunk], ChunkOff: m.ChunkOff, Chunk: m.Chunk.String(), Prefix: m.Prefix}
}

func writeMatchText(w io.Writer, rep MatchResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "indexed %d documents (%d tokens, %s) and %d prefix chains\n", rep.Documents, rep.Tokens, Encoding, rep.Prefixes)
	for _, s := range rep.Skipped {
		fmt.Fprintf(&b, "skipped %s: %s\n", s.Name, s.Reason)
	}
	for _, p := range rep.Prompts {
		fmt.Fprintf(&b, "\nprompt %s: %d tokens, %d matches, cover of %d reuses %d tokens (%.1f%%)", p.ID, p.Tokens, len(p.Matches), len(p.Cover), p.Reused, 100*p.ReusedFraction)
		if p.Truncated {
			b.WriteString(" [matches truncated]")
		}
		b.WriteString("\n")
		for _, m := range p.Matches {
			mark := " "
			for _, c := range p.Cover {
				if c == m {
					mark = "*"
				}
			}
			kind := "chunk "
			if m.Prefix {
				kind = "prefix"
			}
			fmt.Fprintf(&b, "  %s [%d,%d) %s %s [%d,%d)\n", mark, m.ReqOff, m.ReqOff+m.Len, kind, m.Doc, m.ChunkOff, m.ChunkOff+m.Len)
		}
	}
	if len(rep.Prompts) > 0 {
		b.WriteString("\n* = in the cover (non-overlapping matches that reuse the most tokens)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
