package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommittedOutputIsCurrent regenerates both outputs in memory and
// compares them with what is committed, so a stale register map fails
// `go test` and not only `make check-generated`.
func TestCommittedOutputIsCurrent(t *testing.T) {
	goSrc, doc, err := generate("../../regmap.yaml", "../../../docs/regmap.md")
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	for _, c := range []struct {
		path string
		want []byte
	}{
		{"../../regmap_gen.go", goSrc},
		{"../../../docs/regmap.md", doc},
	} {
		got, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatalf("read committed %s: %v", c.path, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s is stale: run `go generate ./nic` and commit the result", c.path)
		}
	}
	if !bytes.HasPrefix(goSrc, []byte(header)) {
		t.Errorf("generated Go does not start with the DO NOT EDIT header")
	}
}

const validSpec = `
name: t
version: {major: 1, minor: 2}
min_bar_size: 0x10000
windows:
  - {name: REGS, offset: 0, size: 0x1000, doc: regs}
  - {name: DATA, offset: 0x1000, size: 0, doc: data}
registers:
  - {name: MAGIC, group: id, offset: 0, width: 32, access: ro, reset: 1, doc: magic}
  - name: CTRL
    group: ctl
    offset: 8
    width: 64
    access: rw
    doc: control
    fields:
      - {name: GO, bits: "0", doc: go}
      - {name: MODE, bits: "7:4", doc: mode}
layouts:
  - name: DESC
    size: 16
    doc: d
    fields:
      - {name: A, offset: 0, width: 64, doc: a}
      - {name: B, offset: 8, bytes: 8, doc: b}
enums:
  - name: CODE
    doc: c
    go_type: Code
    type_bits: 16
    values:
      - {name: OK, value: 0, doc: ok}
      - {name: BAD, value: 1, doc: bad}
`

func TestParseSpecValid(t *testing.T) {
	s, err := parseSpec(strings.NewReader(validSpec))
	if err != nil {
		t.Fatalf("parse valid spec: %v", err)
	}
	raw, err := goSource(s)
	if err != nil {
		t.Fatalf("goSource: %v", err)
	}
	src := []byte(strings.Join(strings.Fields(string(raw)), " ")) // undo gofmt's alignment
	for _, want := range []string{
		"RegMagic = 0x000", "RegCtrl = 0x008", "CtrlGo = 1 << 0", "CtrlModeShift = 4",
		"CtrlModeMask = 0xf0", "DescSize = 16", "DescB = 8", "CodeBad Code = 1",
		`return "BAD"`, "RegmapMinor = 2",
	} {
		if !bytes.Contains(src, []byte(want)) {
			t.Errorf("generated Go lacks %q", want)
		}
	}
	tables := docTables(s)
	for _, want := range []string{"| `0x00008` | `CTRL` | 64 | rw |", "| 7:4 | `MODE` | mode |", "| 8 | `B` | 8 bytes | b |"} {
		if !bytes.Contains(tables, []byte(want)) {
			t.Errorf("doc tables lack %q", want)
		}
	}
}

func TestParseSpecRejects(t *testing.T) {
	cases := []struct {
		name, old, new, want string
	}{
		{"unknown key", "min_bar_size: 0x10000", "min_bar_size: 0x10000\nbogus: 1", "field bogus not found"},
		{"misaligned register", "offset: 8\n    width: 64", "offset: 4\n    width: 64", "not aligned to its width"},
		{"overlapping registers", "offset: 8\n    width: 64", "offset: 0\n    width: 64", "overlap register MAGIC"},
		{"register outside REGS", "offset: 8\n    width: 64", "offset: 0x1000\n    width: 64", "outside the REGS window"},
		{"bad access", "access: rw\n", "access: wo\n", `access "wo"`},
		{"field beyond width", `bits: "7:4"`, `bits: "65:64"`, "beyond the register's 64 bits"},
		{"overlapping fields", `bits: "7:4"`, `bits: "3:0"`, "overlap another field"},
		{"reversed bits", `bits: "7:4"`, `bits: "4:7"`, "hi ≥ lo"},
		{"layout gap", "{name: B, offset: 8, bytes: 8, doc: b}", "{name: B, offset: 8, bytes: 4, doc: b}", "byte 12 belongs to no field"},
		{"layout overlap", "{name: B, offset: 8, bytes: 8, doc: b}", "{name: B, offset: 4, bytes: 12, doc: b}", "overlaps field A"},
		{"layout field outside", "{name: B, offset: 8, bytes: 8, doc: b}", "{name: B, offset: 8, bytes: 16, doc: b}", "outside the layout"},
		{"duplicate enum value", "{name: BAD, value: 1, doc: bad}", "{name: BAD, value: 0, doc: bad}", "already used by OK"},
		{"enum value too wide", "{name: BAD, value: 1, doc: bad}", "{name: BAD, value: 70000, doc: bad}", "does not fit 16 bits"},
		{"window overlap", "{name: DATA, offset: 0x1000", "{name: DATA, offset: 0", "overlaps the previous window"},
		{"window past min BAR", "min_bar_size: 0x10000", "min_bar_size: 0x800", "beyond min_bar_size"},
		{"duplicate Go name", "{name: OK, value: 0, doc: ok}", "{name: BAD, value: 0, doc: ok}", "Go name CodeBad already used"},
		{"lower-case name", "name: CTRL", "name: ctrl", "name must match"},
		{"missing doc", "doc: control\n", "doc: \"\"\n", "no doc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := strings.Replace(validSpec, c.old, c.new, 1)
			if src == validSpec {
				t.Fatalf("case does not change the spec: %q not found", c.old)
			}
			s, err := parseSpec(strings.NewReader(src))
			if err == nil {
				t.Fatalf("parse accepted a spec with %s", c.name)
			}
			if s != nil {
				t.Errorf("parse returned a spec along with error %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestSpliceDoc(t *testing.T) {
	doc := []byte("prose\n" + beginMarker + "\nold\n" + endMarker + "\nafter\n")
	got, err := spliceDoc(doc, []byte("NEW"))
	if err != nil {
		t.Fatalf("splice: %v", err)
	}
	want := "prose\n" + beginMarker + "\n\nNEW\n\n" + endMarker + "\nafter\n"
	if string(got) != want {
		t.Errorf("splice = %q, want %q", got, want)
	}
	if _, err := spliceDoc([]byte("no markers"), nil); !errors.Is(err, errNoMarkers) {
		t.Errorf("splice without markers: err = %v, want errNoMarkers", err)
	}
}

func TestRunWritesOutputs(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "m.yaml")
	docPath := filepath.Join(dir, "m.md")
	goPath := filepath.Join(dir, "m_gen.go")
	if err := os.WriteFile(in, []byte(validSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(docPath, []byte("# T\n"+beginMarker+"\n"+endMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, goPath, docPath); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, p := range []string{goPath, docPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		if !bytes.Contains(b, []byte("CTRL")) && !bytes.Contains(b, []byte("RegCtrl")) {
			t.Errorf("%s does not contain the register", p)
		}
	}
	// An invalid source writes nothing.
	if err := os.WriteFile(in, []byte(strings.Replace(validSpec, "access: rw\n", "access: xx\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(goPath)
	if err := run(in, goPath, docPath); err == nil {
		t.Fatalf("run accepted an invalid source")
	}
	after, _ := os.ReadFile(goPath)
	if !bytes.Equal(before, after) {
		t.Errorf("run rewrote the Go output from an invalid source")
	}
}
