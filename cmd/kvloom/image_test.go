package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
)

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImageKeygenBuildInspectVerify(t *testing.T) {
	dir := t.TempDir()
	out, err := runCLI(t, "image", "keygen", "--out", filepath.Join(dir, "release"), "--json")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	var keys map[string]string
	if err := json.Unmarshal([]byte(out), &keys); err != nil || keys["key_id"] == "" {
		t.Fatalf("keygen --json printed %q (%v)", out, err)
	}
	trust := filepath.Join(dir, "trust")
	if err := os.Mkdir(trust, 0o755); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(keys["public_key"])
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(trust, "release.pub"), pub)

	bit, err := bitstream.GenerateBit(bitstream.BitSpec{Design: "kvmatch", ToolVersion: "2023.2", UserID: 7,
		Part: "xczu9eg-ffvb1156-2-e", Date: "2025/01/02", Time: "03:04:05", ConfigWords: 32, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	bitPath := filepath.Join(dir, "kvmatch.bit")
	writeTestFile(t, bitPath, bit)
	img := filepath.Join(dir, "kvmatch.kvlimg")
	out, err = runCLI(t, "image", "build", "--out", img, "--kind", "fpga", "--name", "kvmatch", "--version", "1.2.0",
		"--part", "xczu9eg-ffvb1156-2-e", "--driver", "Xilinx ZynqMP FPGA Manager", "--regmap", "1.3",
		"--interface-id", "D8424DC4-A4A3-C413-F89E-433683F9040B", "--param", "variant=anchor-only", "--param", "hash_units=4",
		"--payload", "xilinx-bit:bitstream="+bitPath, "--key", keys["private_key"], "--build-time", "2025-01-02T03:04:05Z", "--json")
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var built struct {
		ID     string `json:"id"`
		Signer string `json:"signer"`
	}
	if err := json.Unmarshal([]byte(out), &built); err != nil || built.Signer != keys["key_id"] {
		t.Fatalf("build --json printed %q (%v)", out, err)
	}

	out, err = runCLI(t, "image", "inspect", img)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{"image     kvmatch 1.2.0 (fpga)", "id        " + built.ID, "regmap    1.3",
		`interface_id="d8424dc4a4a3c413f89e433683f9040b"`, "param     hash_units = 4 (int)", "param     variant = anchor-only (str)",
		"section 0 bitstream: xilinx-bit", `xilinx-bit: design "kvmatch" user_id "0x00000007" tool "2023.2" part "xczu9eg-ffvb1156-2-e"`,
		"sync word at data offset 48", "block_tokens=256", "min_match=64"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "image", "inspect", "--json", img)
	if err != nil {
		t.Fatalf("inspect --json: %v", err)
	}
	var rep bitstream.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Image == nil || rep.Image.Sections[0].Vendor.Bit.SyncOffset != 48 {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	out, err = runCLI(t, "image", "inspect", bitPath)
	if err != nil || !strings.Contains(out, "format    xilinx-bit") {
		t.Fatalf("inspect of a bare .bit: %v\n%s", err, out)
	}

	out, err = runCLI(t, "image", "verify", img, "--trust", trust)
	if err != nil || !strings.HasPrefix(out, "OK ") || !strings.Contains(out, keys["key_id"]) {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	// Untrusted: an empty trust directory.
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "image", "verify", img, "--trust", empty, "--json")
	if !errors.Is(err, bitstream.ErrUntrusted) || !strings.Contains(out, `"trusted": false`) {
		t.Fatalf("verify with an empty trust dir: %v\n%s", err, out)
	}

	// Tampered: one payload byte changed.
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 0x01
	bad := filepath.Join(dir, "tampered.kvlimg")
	writeTestFile(t, bad, data)
	_, err = runCLI(t, "image", "verify", bad, "--trust", trust)
	if !errors.Is(err, bitstream.ErrHashMismatch) {
		t.Fatalf("verify of a tampered image: %v", err)
	}

	// Unsigned.
	unsigned := filepath.Join(dir, "unsigned.kvlimg")
	if out, err := runCLI(t, "image", "build", "--out", unsigned, "--kind", "fpga", "--name", "kvmatch", "--version", "1.2.0",
		"--payload", "raw:bin="+bitPath, "--unsigned"); err != nil {
		t.Fatalf("build --unsigned: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "image", "verify", unsigned, "--trust", trust); !errors.Is(err, bitstream.ErrUnsigned) {
		t.Fatalf("verify of an unsigned image: %v", err)
	}
}

func TestImageBuildSim(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "sim.json")
	writeTestFile(t, manifest, []byte(`{"name": "simnic", "version": "0.9.0", "kind": "sim", "target": {"part": "simnic"},
		"regmap": {"major": 1, "minor": 0},
		"matcher": {"anchor_window": 49, "kgram": 16, "min_match": 64, "block_tokens": 256, "chunk_tokens": 4096, "table_capacity": 8192},
		"build": {"time": "2025-01-02T03:04:05Z"}}`))
	img := filepath.Join(dir, "sim.kvlimg")
	args := []string{"image", "build", "--out", img, "--manifest", manifest, "--version", "1.0.0", "--unsigned",
		"--param", "clock_mhz=250", "--param", "lanes=8", "--param", "lookup_latency_cycles=4", "--param", "request_queue_depth=256",
		"--param", "completion_queue_depth=1024", "--param", "pcie_gbps=256", "--param", "network_gbps=100"}
	if out, err := runCLI(t, args...); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parsed, err := bitstream.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	m := parsed.Manifest()
	p, err := bitstream.PipelineFromParams(m.Params)
	if err != nil || p.Lanes != 8 || p.ClockMHz != 250 || m.Version != "1.0.0" || m.Matcher.TableCapacity != 8192 || m.Build.Tool != "kvloom "+version {
		t.Fatalf("manifest %+v, pipeline %+v, %v", m, p, err)
	}

	// Missing pipeline parameters are named, and the error is a usage error.
	_, err = runCLI(t, "image", "build", "--out", filepath.Join(dir, "x.kvlimg"), "--kind", "sim", "--name", "simnic", "--version", "1.0.0", "--unsigned")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "params.clock_mhz: missing pipeline parameter") {
		t.Fatalf("build without pipeline: %v", err)
	}
	for _, bad := range [][]string{
		{"--param", "lanes=eight"},
		{"--payload", "bogus:x=" + manifest},
		{"--payload", "raw-no-name"},
		{"--key", "k", "--unsigned"},
	} {
		args := append([]string{"image", "build", "--out", filepath.Join(dir, "y.kvlimg"), "--kind", "fpga", "--name", "n", "--version", "1.0.0"}, bad...)
		if !strings.Contains(strings.Join(bad, " "), "--key") {
			args = append(args, "--unsigned")
		}
		if _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("build %v: %v, want a usage error", bad, err)
		}
	}
}
