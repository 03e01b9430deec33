package hostctl

import (
	"fmt"
	"strconv"

	"github.com/dustin/go-humanize"
	"gopkg.in/yaml.v3"
)

// Size is a byte count written in configuration as a number or with a unit
// ("64MiB", "8 GiB", "1.5GB").
type Size int64

// parseSize reads a size with or without a unit (go-humanize's ParseBytes:
// KiB/MiB/GiB are powers of two, KB/MB/GB powers of ten).
func parseSize(s string) (Size, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", s, err)
	}
	if n > 1<<62 {
		return 0, fmt.Errorf("parse size %q: larger than 4 EiB", s)
	}
	return Size(n), nil
}

// String writes the size exactly, in the largest binary unit that divides
// it.
func (s Size) String() string {
	units := []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if s != 0 && int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalYAML accepts a plain integer or a string with a unit.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a number or a string like 64MiB", n.Line)
	}
	v, err := parseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = v
	return nil
}

// MarshalYAML writes the String form.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }
