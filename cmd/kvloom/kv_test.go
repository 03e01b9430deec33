package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

func TestKVPresetsAndModel(t *testing.T) {
	out, err := runCLI(t, "kv", "presets")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"llama-3-8b", "131072", "llama-2-7b", "524288", "stories260K", "qwen2.5-7b"} {
		if !strings.Contains(out, want) {
			t.Errorf("kv presets output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "kv", "model", "--preset", "llama-3-70b", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r modelReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("kv model --json: %v\n%s", err, out)
	}
	if r.KVBytesPerToken != 320<<10 || r.Spec.Layers != 80 || len(r.Fingerprint) != 64 {
		t.Fatalf("report %+v", r)
	}
	// The checkpoint on disk describes the same model as the preset.
	bin := filepath.Join(testutil.Stories260K(t), "stories260K.bin")
	fromFile, err := runCLI(t, "kv", "model", "--llama2c", bin)
	if err != nil {
		t.Fatal(err)
	}
	fromPreset, err := runCLI(t, "kv", "model", "--preset", "stories260K")
	if err != nil {
		t.Fatal(err)
	}
	if fromFile != fromPreset || !strings.Contains(fromFile, "1280 B/token") {
		t.Fatalf("checkpoint:\n%s\npreset:\n%s", fromFile, fromPreset)
	}
	out, err = runCLI(t, "kv", "model", "--hf-config", "../../kvcache/testdata/hf/llama-3.1-8b", "--weights-id", "hf:meta-llama/Llama-3.1-8B", "--kv-dtype", "fp8")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "fp8-e4m3 KV 65536 B/token") || !strings.Contains(out, "llama3") {
		t.Fatalf("kv model --hf-config printed:\n%s", out)
	}
	for _, args := range [][]string{
		{"kv", "model"},
		{"kv", "model", "--preset", "gpt-9"},
		{"kv", "model", "--preset", "llama-3-8b", "--gguf", "x.gguf"},
		{"kv", "model", "--preset", "llama-3-8b", "--kv-dtype", "int3"},
	} {
		if _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	if _, err := runCLI(t, "kv", "model", "--hf-config", "../../kvcache/testdata/hf/llama-3-8b"); !errors.Is(err, kvcache.ErrInvalidSpec) {
		t.Errorf("--hf-config without --weights-id: %v", err)
	}
}

func TestKVInspect(t *testing.T) {
	spec, err := kvcache.Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := kvcache.NewKV(spec.Shape(), 6)
	if err != nil {
		t.Fatal(err)
	}
	for i := range kv.Bytes() {
		kv.Bytes()[i] = byte(i)
	}
	salt, _ := spec.Salt("tenant")
	toks := []matcher.Token{1, 403, 407, 261, 378, 42}
	c, err := kvcache.ChunkFromKV(kv, 0, kvcache.ChunkInfo{Key: matcher.ChunkKeyOf(salt, toks), Model: spec.Fingerprint(), SaltID: salt.ID(), Tokens: toks})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := kvcache.AppendBlob(nil, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "chunk.kvlc")
	if err := os.WriteFile(path, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "kv", "inspect", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, c.Key.String()) || !strings.Contains(out, "layers verified 5/5") || !strings.Contains(out, "tokens 6") {
		t.Fatalf("kv inspect printed:\n%s", out)
	}
	blob[len(blob)-1] ^= 0xff
	if err := os.WriteFile(path, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "kv", "inspect", path, "--json")
	if !errors.Is(err, kvcache.ErrChecksum) {
		t.Fatalf("corrupted blob: %v\n%s", err, out)
	}
	var r blobReport
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.LayersOK != 4 || len(r.LayerErrors) != 1 {
		t.Fatalf("report %+v (%v)", r, jerr)
	}
	if err := os.WriteFile(path, blob[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "kv", "inspect", path); !errors.Is(err, kvcache.ErrTruncated) {
		t.Fatalf("truncated blob: %v", err)
	}
}
