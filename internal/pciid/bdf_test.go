package pciid_test

import (
	"errors"
	"testing"

	"github.com/kvloom/kvloom/internal/pciid"
)

func TestParseBDF(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"00000000:3B:00.0", "0000:3b:00.0"}, // NVML
		{"0000:3B:00.0", "0000:3b:00.0"},     // NVML legacy
		{"0000:3b:00.1", "0000:3b:00.1"},     // sysfs
		{"3b:1f.7", "0000:3b:1f.7"},          // lspci without -D
		{"3B:00.1", "0000:3b:00.1"},          // a user's --device, upper case
		{"0001:af:1f.7", "0001:af:1f.7"},
		{"00010000:01:00.0", "10000:01:00.0"}, // VMD domains run past 0xffff
	} {
		got, err := pciid.Normalize(c.in)
		if err != nil || got != c.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "3b", "3b:00", "0000:3b:00", "0000:3b:20.0", "0000:3b:00.8", "000000000:3b:00.0",
		":3b:00.0", "0000:3bb:00.0", "zz:00.0", "g0:00.0", "0000:3b:00.0/x"} {
		var pe *pciid.ParseError
		if b, err := pciid.ParseBDF(bad); !errors.As(err, &pe) || !errors.Is(err, pciid.ErrMalformed) || b != (pciid.BDF{}) {
			t.Errorf("ParseBDF(%q) = %+v, %v; want a *ParseError", bad, b, err)
		}
		if got, err := pciid.Normalize(bad); got != "" || !errors.Is(err, pciid.ErrMalformed) {
			t.Errorf("Normalize(%q) = %q, %v; want ErrMalformed", bad, got, err)
		}
	}
}

// TestParseErrorNamesTheFault: the error says what was parsed, where and
// why, and quotes the input.
func TestParseErrorNamesTheFault(t *testing.T) {
	_, err := pciid.ParseBDF("0000:3b:20.0")
	want := `parse PCI bus id at offset 8 ("0000:3b:20.0"): device must be hex 00–1f`
	if err == nil || err.Error() != want {
		t.Errorf("ParseBDF error = %v; want %s", err, want)
	}
}

// FuzzParseBDF: an address either fails with a *ParseError and a zero
// result, or its sysfs form parses back to the same function and normalises
// to itself.
func FuzzParseBDF(f *testing.F) {
	for _, s := range []string{"00000000:3B:00.0", "0000:3b:00.1", "3b:1f.7", "10000:00:00.0", "x:y.z", "ffff:ff:1f.7", "3b:00", "0000:3b:20.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := pciid.ParseBDF(s)
		if err != nil {
			var pe *pciid.ParseError
			if b != (pciid.BDF{}) || !errors.As(err, &pe) || !errors.Is(err, pciid.ErrMalformed) {
				t.Fatalf("ParseBDF(%q) = %+v, %v; want a zero BDF and a *ParseError", s, b, err)
			}
			return
		}
		back, err := pciid.ParseBDF(b.String())
		if err != nil || back != b {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, b, b.String(), back, err)
		}
		if again, err := pciid.Normalize(b.String()); err != nil || again != b.String() {
			t.Fatalf("Normalize(%q) = %q, %v; want it unchanged", b.String(), again, err)
		}
	})
}
