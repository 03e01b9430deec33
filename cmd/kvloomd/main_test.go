package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/hostctl"
)

func runDaemonCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, log bytes.Buffer
	cmd := newRootCmd(&log)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestConfigDefault(t *testing.T) {
	out, err := runDaemonCLI(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := hostctl.ParseConfig("default.yaml", []byte(out))
	if err != nil {
		t.Fatalf("printed defaults do not parse: %v", err)
	}
	if cfg.Device.Backend != "sim" || !strings.Contains(out, "# auto, sim, fpga") {
		t.Fatalf("unexpected defaults:\n%s", out)
	}
}

func TestPrintConfigMergesFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.yaml")
	if err := os.WriteFile(path, []byte("version: 1\nchunk_tokens: 64\ntiers: mem:1GiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runDaemonCLI(t, "--config", path, "--data-dir", dir, "--device", "none", "--print-config")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := hostctl.ParseConfig("merged.yaml", []byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ChunkTokens != 64 || cfg.Tiers != "mem:1GiB" || cfg.DataDir != dir || cfg.Device.Backend != "none" {
		t.Fatalf("merged config %+v", cfg)
	}
}

func TestBadConfigIsAConfigError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.yaml")
	if err := os.WriteFile(path, []byte("version: 1\nchunk_tokens: 7\nlog:\n  colour: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runDaemonCLI(t, "--config", path, "--print-config")
	if !errors.Is(err, hostctl.ErrConfig) || !strings.Contains(err.Error(), "k.yaml:4") {
		t.Fatalf("err = %v, want a config error naming k.yaml:4", err)
	}
}

// TestOperationsDocCurrent: docs/operations.md lists the defaults exactly
// as `kvloomd config default` prints them.
func TestOperationsDocCurrent(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := runDaemonCLI(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	begin, end := "<!-- BEGIN kvloomd config default -->\n```yaml\n", "```\n<!-- END kvloomd config default -->"
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatal("docs/operations.md lacks the default configuration markers")
	}
	if got := string(doc[i+len(begin) : j]); got != out {
		t.Fatalf("docs/operations.md's default configuration is stale; replace it with `kvloomd config default`:\n%s", out)
	}
}
