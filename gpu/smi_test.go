package gpu

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// parseSMINUMA reads the "NUMA Affinity" cell of each GPU row of
// `nvidia-smi topo -m`: tab-separated, the header underlined with ANSI
// escapes.
func parseSMINUMA(out string) (map[string]string, error) {
	out = regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(out, "")
	col := -1
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if col < 0 {
			for i, h := range f {
				if strings.TrimSpace(h) == "NUMA Affinity" {
					col = i
				}
			}
			continue
		}
		if strings.HasPrefix(f[0], "GPU") && col < len(f) {
			rows[strings.TrimSpace(f[0])] = strings.TrimSpace(f[col])
		}
	}
	if col < 0 {
		return nil, errors.New("no NUMA Affinity column")
	}
	return rows, nil
}

// TestParseSMINUMA reads the NUMA column from what nvidia-smi printed on
// the H200 VM of the first scripts/gpu-check.sh run.
func TestParseSMINUMA(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "nvidia-smi", "topo-m-h200-vm.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseSMINUMA(string(out))
	if err != nil || len(got) != 1 || got["GPU0"] != "0" {
		t.Fatalf("parseSMINUMA = %v, %v; want GPU0 → 0", got, err)
	}
	if _, err := parseSMINUMA("GPU0\tX\n"); err == nil {
		t.Fatal("output without a NUMA Affinity column was accepted")
	}
}
