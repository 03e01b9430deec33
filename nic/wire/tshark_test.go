package wire

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
)

// writeCapture records frames into a pcap file in a temp dir and returns its path.
func writeCapture(t *testing.T, frames ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	rec, err := NewRecorder(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	for i, f := range frames {
		if err := rec.Write(ts.Add(time.Duration(i)*time.Millisecond), f); err != nil {
			t.Fatal(err)
		}
	}
	if rec.Frames() != len(frames) {
		t.Fatalf("recorder counted %d frames, wrote %d", rec.Frames(), len(frames))
	}
	path := filepath.Join(t.TempDir(), "kvlp.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tsharkFields runs tshark with the project's dissector over a capture and
// returns one line of tab-separated fields per frame.
func tsharkFields(t *testing.T, ctx context.Context, pcap string, extra []string, fields ...string) []string {
	t.Helper()
	tshark := testutil.RequireTool(t, "tshark", "tshark")
	args := []string{"-n", "-r", pcap, "-X", "lua_script:" + filepath.Join(testutil.RepoRoot(t), "docs", "kvlp.lua"), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"}
	args = append(args, extra...)
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.CommandContext(ctx, tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if strings.Contains(stderr.String(), "Lua: Error") || strings.Contains(stderr.String(), "lua_script") {
		t.Fatalf("tshark could not load docs/kvlp.lua:\n%s", stderr.String())
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
}

func TestTsharkDissector(t *testing.T) {
	ep4, ep6 := testEndpoints(false), testEndpoints(true)
	hint := sampleHint(3)
	reply, err := Answer(hint, func(_, fp uint64) (ReplyEntry, bool) {
		return ReplyEntry{ChunkID: 0xc0ffee0000000000 | fp&0xffff, ChunkOffset: 11}, fp == hint.Hints[2].Fingerprint
	})
	if err != nil {
		t.Fatal(err)
	}
	noReply := sampleHint(1)
	noReply.Flags = FlagNoReply
	badVersion := sampleHint(2)
	badVersion.Version = 2
	var frames [][]byte
	for _, f := range []func() ([]byte, error){
		func() ([]byte, error) { return ep4.Frame(hint) },
		func() ([]byte, error) { return ep4.Reverse().Frame(reply) },
		func() ([]byte, error) { return ep6.Frame(hint) },
		func() ([]byte, error) { return ep4.Frame(noReply) },
		func() ([]byte, error) { return ep4.RawFrame(badVersion) },
	} {
		b, err := f()
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, b)
	}
	pcap := writeCapture(t, frames...)
	lines := tsharkFields(t, t.Context(), pcap, nil,
		"kvlp.type", "kvlp.request_id", "kvlp.salt_id", "kvlp.count", "kvlp.hits", "kvlp.flags.no_reply",
		"kvlp.fingerprint", "kvlp.token_offset", "kvlp.hit", "kvlp.chunk_id", "kvlp.chunk_offset", "_ws.expert.message")
	if len(lines) != len(frames) {
		t.Fatalf("tshark printed %d lines for %d frames:\n%s", len(lines), len(frames), strings.Join(lines, "\n"))
	}
	fps := make([]string, len(hint.Hints))
	offs := make([]string, len(hint.Hints))
	for i, h := range hint.Hints {
		fps[i] = fmt.Sprintf("0x%016x", h.Fingerprint)
		offs[i] = fmt.Sprint(h.TokenOffset)
	}
	hintLine := strings.Join([]string{"1", fmt.Sprint(hint.RequestID), fmt.Sprintf("0x%016x", hint.SaltID), "3", "0", "0",
		strings.Join(fps, ","), strings.Join(offs, ","), "", "", "", ""}, "\t")
	replyLine := strings.Join([]string{"2", fmt.Sprint(hint.RequestID), fmt.Sprintf("0x%016x", hint.SaltID), "3", "1", "0",
		"", "", "0,0,1", fmt.Sprintf("0x0000000000000000,0x0000000000000000,0x%016x", reply.Replies[2].ChunkID), "0,0,11", ""}, "\t")
	for i, want := range []string{hintLine, replyLine, hintLine} {
		if lines[i] != want {
			t.Errorf("frame %d:\n got %q\nwant %q", i+1, lines[i], want)
		}
	}
	if f := strings.Split(lines[3], "\t"); f[5] != "1" {
		t.Errorf("NO_REPLY frame: no_reply field %q, want 1 (line %q)", f[5], lines[3])
	}
	if !strings.Contains(lines[4], "version 2, want 1") {
		t.Errorf("malformed frame: no expert error naming the version: %q", lines[4])
	}

	// Another port through the dissector's preference, as docs/kvlp.lua says.
	e := ep4
	e.DstPort = 9000
	f, err := e.Frame(hint)
	if err != nil {
		t.Fatal(err)
	}
	pcap = writeCapture(t, f)
	if got := tsharkFields(t, t.Context(), pcap, nil, "kvlp.request_id"); got[0] != "" {
		t.Fatalf("port 9000 decoded as KVLP without the preference: %q", got)
	}
	got := tsharkFields(t, t.Context(), pcap, []string{"-o", "kvlp.port:9000"}, "kvlp.request_id")
	if got[0] != fmt.Sprint(hint.RequestID) {
		t.Fatalf("with -o kvlp.port:9000: %q, want request id %d", got, hint.RequestID)
	}
}
