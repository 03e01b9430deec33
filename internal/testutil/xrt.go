package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FakeXRT is a stand-in for XRT's command-line tool: a shell script named
// xrt-smi (or xbutil) in a temporary directory that accepts
// `program [--device|-d BDF] --user|-u FILE` as XRT documents it, checks the
// file starts with the xclbin2 magic, logs what it programmed, and fails
// when told to. Pass Dir as bitstream.XRTOptions.Path.
type FakeXRT struct {
	Dir  string // directory holding the tool
	Tool string // path of the tool
	log  string
	fail string
}

// fakeXRTScript mimics `xrt-smi program`. Its log has one line per
// successful program: "<bdf> <sha256 of the xclbin>".
const fakeXRTScript = `#!/bin/sh
dir=$(dirname "$0")
[ "$1" = program ] || { echo "ERROR: unknown command: $1" >&2; exit 2; }
shift
dev=- file=
while [ $# -gt 0 ]; do
  case "$1" in
    -d|--device) dev=$2; shift 2 ;;
    -u|--user) file=$2; shift 2 ;;
    *) echo "ERROR: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$file" ] || { echo "ERROR: --user <xclbin> is required" >&2; exit 2; }
[ -r "$file" ] || { echo "ERROR: cannot read $file" >&2; exit 1; }
magic=$(head -c 7 "$file")
[ "$magic" = xclbin2 ] || { echo "ERROR: $file is not an xclbin2 file" >&2; exit 1; }
if [ -e "$dir/fail-next" ]; then
  cat "$dir/fail-next" >&2
  rm -f "$dir/fail-next"
  exit 1
fi
sum=$(sha256sum "$file" | cut -d' ' -f1)
echo "$dev $sum" >> "$dir/programmed.log"
echo "INFO: $(basename "$0") program succeeded."
`

// NewFakeXRT writes the fake tool, named name ("xrt-smi" or "xbutil"),
// into a directory under t.TempDir().
func NewFakeXRT(t testing.TB, name string) *FakeXRT {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("fake xrt: %v", err)
	}
	f := &FakeXRT{Dir: dir, Tool: filepath.Join(dir, name), log: filepath.Join(dir, "programmed.log"), fail: filepath.Join(dir, "fail-next")}
	if err := os.WriteFile(f.Tool, []byte(fakeXRTScript), 0o755); err != nil {
		t.Fatalf("fake xrt: %v", err)
	}
	return f
}

// FailNext makes the next program command fail, printing msg.
func (f *FakeXRT) FailNext(t testing.TB, msg string) {
	t.Helper()
	if err := os.WriteFile(f.fail, []byte(msg+"\n"), 0o644); err != nil {
		t.Fatalf("fake xrt: %v", err)
	}
}

// Programmed returns one "<bdf> <sha256>" line per successful program
// command, in order.
func (f *FakeXRT) Programmed(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(f.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("fake xrt: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
