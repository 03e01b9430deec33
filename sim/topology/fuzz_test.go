package topology

import (
	"bytes"
	"testing"
)

// FuzzParse checks that no input panics the reader, that an error comes
// with a nil topology, and that whatever parses is valid and survives
// marshal → parse → marshal unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte("version: 1\nhosts:\n  - name: h\n    gpus: [{name: g, model: H100-SXM}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := Parse(data)
		if err != nil {
			if top != nil {
				t.Fatalf("error %v with a non-nil topology", err)
			}
			return
		}
		if err := top.Validate(); err != nil {
			t.Fatalf("Parse accepted a topology that Validate rejects: %v", err)
		}
		out, err := top.Marshal()
		if err != nil {
			t.Fatalf("marshal a parsed topology: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("parse of marshalled output: %v\n%s", err, out)
		}
		again, err := back.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("marshal → parse → marshal changed the output:\n%s\n---\n%s", out, again)
		}
		for _, h := range top.Hosts {
			for _, g := range h.GPUs {
				for _, n := range h.NICs {
					if _, err := h.Distance(g.Name, n.Name); err != nil {
						t.Fatalf("distance between listed devices: %v", err)
					}
					if _, err := h.Route(g.Name, n.Name); err != nil {
						t.Fatalf("route between listed devices: %v", err)
					}
				}
			}
		}
	})
}
