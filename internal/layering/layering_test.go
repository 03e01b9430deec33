package layering

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/kvloom/kvloom"

// allowed lists, for each kvloom package (path relative to the module), the
// kvloom packages its non-test code may import, directly or not. It follows
// the package table of DESIGN.md and docs/architecture.md; a new package must
// be added here, which is the point.
var allowed = map[string][]string{
	"matcher":            {},
	"kvcache":            {"matcher"},
	"store":              {"matcher", "kvcache", "store/evict"},
	"store/evict":        {},
	"bitstream":          {},
	"nic":                {"matcher", "bitstream"},
	"nic/wire":           {"matcher"},
	"nic/simnic":         {"nic", "matcher", "bitstream", "sim", "kvcache", "sim/topology"},
	"nic/fpga":           {"nic", "matcher", "bitstream", "internal/pciid"},
	"nic/xdp":            {"nic", "nic/wire", "matcher", "bitstream"},
	"nic/nictest":        {"nic", "matcher", "bitstream"},
	"nic/internal/gen":   {},
	"gpu":                {"kvcache", "matcher", "sim/topology", "internal/pciid"},
	"sim/topology":       {},
	"sim":                {"matcher", "kvcache", "sim/topology"},
	"sim/tune":           {"sim", "matcher", "kvcache", "sim/topology"},
	"engine":             {"kvcache", "matcher"},
	"engine/quality":     {"engine", "kvcache", "matcher"},
	"internal/benchutil": {},
	"internal/layering":  {},
	"internal/pciid":     {},
	"internal/testutil":  {"*"},
	"internal/workload":  {"matcher"},
	"hostctl":            {"*"},
	"hostctl/api":        {},
	"cmd/kvloom":         {"*"},
	"cmd/kvloomd":        {"*"},
}

type listedPackage struct {
	ImportPath string
	Deps       []string
}

func TestImportsFollowDesignTable(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Deps", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if strings.HasPrefix(rel, "hostctl/") || strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "internal/testutil/") {
			continue // the top of the stack, and test helpers, may import anything
		}
		ok, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not in the layering table: add it to internal/layering with the packages it may import", rel)
			continue
		}
		if slices.Contains(ok, "*") {
			continue
		}
		for _, dep := range p.Deps {
			if !strings.HasPrefix(dep, module+"/") {
				continue
			}
			drel := strings.TrimPrefix(dep, module+"/")
			if !slices.Contains(ok, drel) {
				t.Errorf("%s imports %s, which DESIGN.md's table does not allow (allowed: %v)", rel, drel, ok)
			}
		}
	}
	if seen < 3 {
		t.Fatalf("go list reported %d packages; the test is not looking at the module", seen)
	}
}
