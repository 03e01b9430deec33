package main

import (
	"bytes"
	"strings"
	"testing"
)

// runCLI runs the kvloom command tree in-process with args and returns stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatalf("kvloom version: %v", err)
	}
	if !strings.HasPrefix(out, "kvloom ") {
		t.Fatalf("kvloom version printed %q, want it to start with \"kvloom \"", out)
	}
}
