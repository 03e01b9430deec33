package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BuildBPFObject compiles the BPF C source src with clang at test time
// (clang -O2 -g -target bpf) and returns the ELF object. It fails t saying
// what to install when clang or the libbpf headers are missing.
func BuildBPFObject(t testing.TB, src string) []byte {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang not found: install clang (Debian: apt-get install clang), or run make test-deps")
	}
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		t.Fatalf("bpf/bpf_helpers.h not found: install libbpf-dev (Debian: apt-get install libbpf-dev), or run make test-deps")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "prog.c"), filepath.Join(dir, "prog.o")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatalf("write bpf source: %v", err)
	}
	args := []string{"-O2", "-g", "-target", "bpf", "-c", in, "-o", out}
	if inc := multiarchInclude(); inc != "" {
		// <linux/bpf.h> includes <asm/types.h>, which Debian keeps in the
		// multiarch directory that -target bpf does not search.
		args = append(args, "-I", inc)
	}
	cmd := exec.Command(clang, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang %v: %v\n%s", args, err, b)
	}
	obj, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read bpf object: %v", err)
	}
	return obj
}

func multiarchInclude() string {
	triple := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu", "riscv64": "riscv64-linux-gnu"}[runtime.GOARCH]
	if triple == "" {
		return ""
	}
	dir := filepath.Join("/usr/include", triple)
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}
