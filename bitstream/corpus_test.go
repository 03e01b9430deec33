package bitstream_test

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

var updateCorpus = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz from the generators")

// corpusKey is fixed so that regenerated seeds are byte-identical.
var corpusKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x4b}, ed25519.SeedSize))

// fuzzSeeds returns the seed corpus of every fuzz target: files named
// valid-* must be accepted by the target's parser, invalid-* refused.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bit := testBit(t, "xczu9eg-ffvb1156-2-e", 1)
	ise, err := bitstream.GenerateBit(bitstream.BitSpec{Design: "xform.ncd", Part: "v1000efg860", Date: "2001/08/10", Time: "06:55:04", ConfigWords: 2})
	if err != nil {
		t.Fatal(err)
	}
	xcl := testXclbin(t, u55c, u55cIface, 1)
	obj := bpfObject(t, "XDP_PASS")
	fpga := fpgaImage(t, corpusKey).Bytes()
	sim := testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindSim, "simnic", "1.0.0"), nil).Bytes()
	xdp := xdpImage(t, corpusKey, "1.0.0", obj).Bytes()
	simManifest, err := testutil.ImageManifest(bitstream.KindSim, "simnic", "1.0.0").MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bitstream.MarshalPublicKey(corpusKey.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bitstream.MarshalPrivateKey(corpusKey)
	if err != nil {
		t.Fatal(err)
	}
	bf, err := bitstream.ParseBit(bit)
	if err != nil {
		t.Fatal(err)
	}
	noSync := bytes.Clone(bit)
	copy(noSync[bf.DataOffset+bf.SyncOffset:], "\x00\x00\x00\x00")
	return map[string]map[string][]byte{
		"FuzzParse": {
			"valid-fpga-signed":  fpga,
			"valid-sim-unsigned": sim,
			"valid-xdp":          xdp,
			"invalid-truncated":  fpga[:len(fpga)/2],
			"invalid-magic":      append([]byte("KVLIMG\n\n"), fpga[8:]...),
		},
		"FuzzParseBit": {
			"valid-vivado":        bit,
			"valid-ise":           ise,
			"valid-trailing":      append(bytes.Clone(ise), 0, 0),
			"invalid-no-sync":     noSync,
			"invalid-past-end":    bit[:len(bit)-4],
			"invalid-wrong-order": bytes.Replace(bit, []byte{0, 'b', 0}, []byte{0, 'c', 0}, 1),
		},
		"FuzzParseXclbin": {
			"valid-u55c":        xcl,
			"valid-empty":       must(bitstream.GenerateXclbin(bitstream.XclbinSpec{PlatformVBNV: "p"})),
			"invalid-truncated": xcl[:len(xcl)-1],
		},
		"FuzzInspectEBPF": {
			"valid-xdp":       obj,
			"invalid-not-elf": []byte("\x7fELF\x02\x01\x01"),
		},
		"FuzzUnmarshalManifest": {
			"valid-sim":             simManifest,
			"valid-fpga":            must(fpgaImage(t, nil).Manifest().MarshalCanonical()),
			"invalid-unknown-field": []byte(`{"name":"x","version":"1.0.0","kind":"sim","zzz":1}`),
		},
		"FuzzParsePublicKey": {
			"valid-ed25519":       pub,
			"invalid-private-key": priv,
		},
	}
}

func corpusParse(target string, data []byte) error {
	var err error
	switch target {
	case "FuzzParse":
		_, err = bitstream.Parse(bytes.NewReader(data))
	case "FuzzParseBit":
		_, err = bitstream.ParseBit(data)
	case "FuzzParseXclbin":
		_, err = bitstream.ParseXclbin(data)
	case "FuzzInspectEBPF":
		_, err = bitstream.InspectEBPF(data)
	case "FuzzUnmarshalManifest":
		_, err = bitstream.UnmarshalManifest(data)
	case "FuzzParsePublicKey":
		_, err = bitstream.ParsePublicKey(data)
	}
	return err
}

// TestFuzzCorpus checks the committed seed corpora: every target has one,
// its valid-* seeds parse and its invalid-* seeds do not. With -update it
// rewrites them from the generators first.
func TestFuzzCorpus(t *testing.T) {
	if *updateCorpus {
		for target, seeds := range fuzzSeeds(t) {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, data := range seeds {
				enc := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
				if err := os.WriteFile(filepath.Join(dir, name), []byte(enc), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	targets := []string{"FuzzParse", "FuzzParseBit", "FuzzParseXclbin", "FuzzInspectEBPF", "FuzzUnmarshalManifest", "FuzzParsePublicKey"}
	for _, target := range targets {
		ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		if err != nil || len(ents) == 0 {
			t.Fatalf("no seed corpus for %s (%v): run go test ./bitstream -run TestFuzzCorpus -update", target, err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
			raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			data, err := decodeCorpusFile(raw)
			if err != nil {
				t.Fatalf("%s/%s: %v", target, e.Name(), err)
			}
			perr := corpusParse(target, data)
			switch {
			case strings.HasPrefix(e.Name(), "valid-") && perr != nil:
				t.Errorf("%s/%s: valid seed refused: %v", target, e.Name(), perr)
			case strings.HasPrefix(e.Name(), "invalid-") && perr == nil:
				t.Errorf("%s/%s: invalid seed accepted", target, e.Name())
			}
		}
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "valid-") }) {
			t.Errorf("%s: the corpus has no valid seed", target)
		}
	}
}

// decodeCorpusFile reads a one-value "go test fuzz v1" file of []byte.
func decodeCorpusFile(raw []byte) ([]byte, error) {
	s := strings.TrimSpace(strings.TrimPrefix(string(raw), "go test fuzz v1\n"))
	if !strings.HasPrefix(s, "[]byte(") || !strings.HasSuffix(s, ")") {
		return nil, strconv.ErrSyntax
	}
	v, err := strconv.Unquote(s[len("[]byte(") : len(s)-1])
	return []byte(v), err
}
