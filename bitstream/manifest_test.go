package bitstream_test

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

func TestManifestValidate(t *testing.T) {
	base := testutil.ImageManifest(bitstream.KindSim, "simnic", "1.0.0")
	if err := base.Validate(); err != nil {
		t.Fatalf("test manifest invalid: %v", err)
	}
	cases := []struct {
		name   string
		change func(m *bitstream.Manifest)
		want   []string
	}{
		{"name", func(m *bitstream.Manifest) { m.Name = "-x" }, []string{"name: invalid image name"}},
		{"version with v", func(m *bitstream.Manifest) { m.Version = "v1.0.0" }, []string{"version: not a semantic version"}},
		{"version incomplete", func(m *bitstream.Manifest) { m.Version = "1.0" }, []string{"version"}},
		{"kind", func(m *bitstream.Manifest) { m.Kind = "gpu" }, []string{`kind: unknown image kind (got "gpu", want fpga, xdp or sim)`}},
		{"part control char", func(m *bitstream.Manifest) { m.Target.Part = "a\x00b" }, []string{"target.part: contains a non-printable character"}},
		{"interface id", func(m *bitstream.Manifest) { m.Target.InterfaceID = "D8424DC4-A4A3-C413-F89E-433683F9040B" }, []string{"target.interface_id: not a canonical UUID"}},
		{"chunk below min match", func(m *bitstream.Manifest) { m.Matcher.ChunkTokens = 10 }, []string{"matcher.chunk_tokens: shorter than min_match"}},
		{"table capacity", func(m *bitstream.Manifest) { m.Matcher.TableCapacity = 0 }, []string{"matcher.table_capacity: out of range (got 0"}},
		{"params unsorted", func(m *bitstream.Manifest) { m.Params[0], m.Params[1] = m.Params[1], m.Params[0] }, []string{"not sorted by name"}},
		{"param two values", func(m *bitstream.Manifest) { v := true; m.Params[0].Bool = &v }, []string{"params[0]: exactly one of int, float, bool, str"}},
		{"param NaN", func(m *bitstream.Manifest) { v := math.NaN(); m.Params[0].Float = &v }, []string{"params[0].float: not a finite number"}},
		{"pipeline missing", func(m *bitstream.Manifest) { m.Params = m.Params[1:] }, []string{"params.clock_mhz: missing pipeline parameter"}},
		{"pipeline wrong unit", func(m *bitstream.Manifest) { m.Params[0].Unit = "GHz" }, []string{`params.clock_mhz: wrong unit (got "GHz", want "MHz")`}},
		{"pipeline out of range", func(m *bitstream.Manifest) { v := int64(0); m.Params[2].Int = &v }, []string{"params.lanes: out of range (got 0, want 1–4096)"}},
		{"build time", func(m *bitstream.Manifest) { m.Build.Time = "2025-01-02T03:04:05+01:00" }, []string{"build.time: not an RFC 3339 UTC time"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base.Clone()
			tc.change(&m)
			wantErr(t, m.Validate(), bitstream.ErrMalformed, tc.want...)
			if _, err := m.MarshalCanonical(); err == nil {
				t.Fatal("MarshalCanonical accepted an invalid manifest")
			}
		})
	}
}

func TestPipelineParams(t *testing.T) {
	p := bitstream.Pipeline{ClockMHz: 322.265625, Lanes: 16, LookupLatencyCycles: 0, RequestQueueDepth: 64, CompletionQueueDepth: 128, PCIeGbps: 512, NetworkGbps: 400}
	got, err := bitstream.PipelineFromParams(p.Params())
	if err != nil {
		t.Fatalf("PipelineFromParams: %v", err)
	}
	if got != p {
		t.Fatalf("pipeline round trip: got %+v, want %+v", got, p)
	}
	typ, unit, ok := bitstream.PipelineParamType(bitstream.ParamLanes)
	if !ok || typ != "int" || unit != "tokens/cycle" {
		t.Fatalf("PipelineParamType(lanes) = %q %q %v", typ, unit, ok)
	}
	// A sim image carries it through the canonical encoding exactly,
	// floats included.
	m := testutil.ImageManifest(bitstream.KindSim, "simnic", "1.0.0")
	m.Params = append(p.Params(), bitstream.StrParam("zeta", "", "extra <&> text"))
	img := testutil.SignedImage(t, m, nil)
	back, err := bitstream.PipelineFromParams(img.Manifest().Params)
	if err != nil || back != p {
		t.Fatalf("pipeline through an image: %+v, %v", back, err)
	}
	if z, ok := img.Manifest().Param("zeta"); !ok || z.Value() != "extra <&> text" {
		t.Fatalf("extra parameter lost: %+v", z)
	}
}

func TestUnmarshalManifest(t *testing.T) {
	hand := []byte(`{
	  "name": "simnic", "version": "1.0.0", "kind": "sim",
	  "target": {"part": "simnic"},
	  "regmap": {"major": 1, "minor": 2},
	  "matcher": {"anchor_window": 32, "kgram": 8, "min_match": 64, "block_tokens": 256, "chunk_tokens": 4096, "table_capacity": 1024},
	  "params": [
	    {"name": "request_queue_depth", "unit": "descriptors", "int": 64},
	    {"name": "clock_mhz", "unit": "MHz", "float": 250},
	    {"name": "lanes", "unit": "tokens/cycle", "int": 8},
	    {"name": "lookup_latency_cycles", "unit": "cycles", "int": 3},
	    {"name": "completion_queue_depth", "unit": "descriptors", "int": 64},
	    {"name": "pcie_gbps", "unit": "Gbit/s", "float": 256},
	    {"name": "network_gbps", "unit": "Gbit/s", "float": 100}
	  ],
	  "build": {"time": "2025-01-02T03:04:05Z"}
	}`)
	m, err := bitstream.UnmarshalManifest(hand)
	if err != nil {
		t.Fatalf("UnmarshalManifest: %v", err)
	}
	if m.Params[0].Name != "clock_mhz" || m.RegMap != (bitstream.RegMapVersion{Major: 1, Minor: 2}) {
		t.Fatalf("params not sorted or fields lost: %+v", m)
	}
	canon, err := m.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	again, err := bitstream.UnmarshalManifest(canon)
	if err != nil || !reflect.DeepEqual(again, m) {
		t.Fatalf("canonical round trip: %v", err)
	}
	_, err = bitstream.UnmarshalManifest([]byte(`{"name":"x","bogus":1}`))
	wantErr(t, err, bitstream.ErrMalformed, `unknown field "bogus"`)
	_, err = bitstream.UnmarshalManifest(append(canon, []byte(` {}`)...))
	wantErr(t, err, bitstream.ErrMalformed, "data after the manifest object")
	_, err = bitstream.UnmarshalManifest([]byte(`{"name":`))
	wantErr(t, err, bitstream.ErrMalformed, "cannot decode")
}

func TestRequirementsCheck(t *testing.T) {
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch", "1.0.0")
	m.RegMap = bitstream.RegMapVersion{Major: 1, Minor: 3}
	ok := bitstream.Requirements{RegMap: bitstream.RegMapVersion{Major: 1, Minor: 2}, Matcher: bitstream.MatcherParams{BlockTokens: 256, MinMatch: 64, TableCapacity: 1000}}
	if err := ok.Check(m); err != nil {
		t.Fatalf("compatible image refused: %v", err)
	}
	if err := (bitstream.Requirements{}).Check(m); err != nil {
		t.Fatalf("zero requirements refused an image: %v", err)
	}
	cases := []struct {
		name string
		r    bitstream.Requirements
		want []string
	}{
		{"major", bitstream.Requirements{RegMap: bitstream.RegMapVersion{Major: 2}}, []string{`regmap: image has "1.3", target has "2.0"`}},
		{"minor", bitstream.Requirements{RegMap: bitstream.RegMapVersion{Major: 1, Minor: 4}}, []string{"regmap"}},
		{"block", bitstream.Requirements{Matcher: bitstream.MatcherParams{BlockTokens: 128, KGram: 4}}, []string{"matcher.block_tokens", "matcher.kgram"}},
		{"capacity", bitstream.Requirements{Matcher: bitstream.MatcherParams{TableCapacity: 1 << 20}}, []string{"matcher.table_capacity", "smaller than the control plane needs"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Check(m)
			wantErr(t, err, bitstream.ErrIncompatible, tc.want...)
			var ie *bitstream.IncompatibleError
			if !errors.As(err, &ie) {
				t.Fatalf("%v holds no *IncompatibleError", err)
			}
		})
	}
}

func TestPartsMatch(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"xc7a35tcsg324-1", "7a35tcsg324", true},
		{"XCZU9EG-FFVB1156-2-E", "xczu9eg-ffvb1156-2-e", true},
		{"xczu9eg", "xczu9eg-ffvb1156-2-e", true},
		{"xczu9eg", "xczu7ev", false},
		{"xcu55c-fsvh2892-2L-e", "xcu280-fsvh2892-2L-e", false},
		{"", "xczu9eg", false},
	} {
		if got := bitstream.PartsMatch(tc.a, tc.b); got != tc.want {
			t.Errorf("PartsMatch(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNormalizeUUID(t *testing.T) {
	got, err := bitstream.NormalizeUUID("D8424DC4-A4A3-C413-F89E-433683F9040B\n")
	if err != nil || got != "d8424dc4a4a3c413f89e433683f9040b" {
		t.Fatalf("NormalizeUUID = %q, %v", got, err)
	}
	if _, err := bitstream.NormalizeUUID("1234"); err == nil {
		t.Fatal("NormalizeUUID accepted 4 hex digits")
	}
	if v, err := bitstream.ParseRegMapVersion("2.7"); err != nil || v.String() != "2.7" {
		t.Fatalf("ParseRegMapVersion = %v, %v", v, err)
	}
	if _, err := bitstream.ParseRegMapVersion("2"); err == nil {
		t.Fatal("ParseRegMapVersion accepted a bare major")
	}
}
