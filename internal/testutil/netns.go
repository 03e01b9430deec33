package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// This file and netns_linux.go hold the helpers for tests that need the
// kernel: root, tools, network namespaces and veth pairs. A missing
// requirement fails the test with what to install or how to run it;
// nothing skips.

// RequireRoot fails t unless the test runs as root; why says what needs it
// (for example "BPF programs and network namespaces").
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s need root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): run the tests as root, e.g. sudo go test", why)
	}
}

// RequireTool returns the path of command cmd, or fails t naming the Debian
// package that provides it.
func RequireTool(t testing.TB, cmd, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s not found: install %s (apt-get install %s, or make test-deps)", cmd, debianPackage, debianPackage)
	}
	return p
}
