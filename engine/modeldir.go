package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultModelSubdir is where the workspace keeps the stories260K model,
// relative to the directory above the repository.
const DefaultModelSubdir = "shared/testdata/models/stories260K"

// FindDefaultModelDir looks for DefaultModelSubdir beside each directory
// from start up to the root (so it finds ../shared/... from anywhere in
// the repository) and returns the first that exists.
func FindDefaultModelDir(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", fmt.Errorf("find model dir: %w", err)
	}
	for {
		cand := filepath.Join(dir, DefaultModelSubdir)
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find model dir: no %s above %s: %w", DefaultModelSubdir, start, fs.ErrNotExist)
		}
		dir = parent
	}
}

// Open loads the checkpoint and tokenizer of a llama2.c model directory:
// the tokenizer is tokenizer.bin or tok*.bin, the checkpoint the one other
// *.bin file.
func Open(dir string) (*Engine, *Tokenizer, error) {
	ckpt, tokPath, err := modelFiles(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open %w", err) // its errors start with "model dir"
	}
	m, err := LoadCheckpoint(ckpt)
	if err != nil {
		return nil, nil, fmt.Errorf("open model dir: %w", err)
	}
	t, err := LoadTokenizer(tokPath, m.Config.VocabSize)
	if err != nil {
		return nil, nil, fmt.Errorf("open model dir: %w", err)
	}
	e, err := New(m)
	if err != nil {
		return nil, nil, fmt.Errorf("open model dir: %w", err)
	}
	return e, t, nil
}

// CheckpointPath returns the path of the checkpoint Open loads from a
// llama2.c model directory, for callers that hand the file to another
// loader (kvcache.LoadLlama2C). A directory without exactly one checkpoint
// and one tokenizer is an error wrapping ErrBadInput and fs.ErrNotExist.
func CheckpointPath(dir string) (string, error) {
	ckpt, _, err := modelFiles(dir)
	return ckpt, err
}

// modelFiles finds the checkpoint and the tokenizer of a model directory.
// Its errors start with "model dir".
func modelFiles(dir string) (ckpt, tok string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("model dir: %w", err)
	}
	var ckpts, toks []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".bin") {
			continue
		}
		if n == "tokenizer.bin" || strings.HasPrefix(n, "tok") {
			toks = append(toks, n)
		} else {
			ckpts = append(ckpts, n)
		}
	}
	if len(ckpts) != 1 || len(toks) != 1 {
		return "", "", fmt.Errorf("model dir %s: want one checkpoint *.bin and one tokenizer (tokenizer.bin or tok*.bin), found checkpoints %q and tokenizers %q: %w",
			dir, ckpts, toks, errors.Join(ErrBadInput, fs.ErrNotExist))
	}
	return filepath.Join(dir, ckpts[0]), filepath.Join(dir, toks[0]), nil
}
