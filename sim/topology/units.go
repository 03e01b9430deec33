package topology

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// BandwidthUnit is the unit a Bandwidth was written in. Keeping it lets a
// file round-trip in the notation its author chose: network line rates in
// bits per second, memory and storage in bytes per second.
type BandwidthUnit string

// The canonical bandwidth units. Parsing also accepts the spellings "Gb/s",
// "GBps" and so on; marshalling always writes these.
const (
	Mbps    BandwidthUnit = "Mbps"
	Gbps    BandwidthUnit = "Gbps"
	Tbps    BandwidthUnit = "Tbps"
	MBps    BandwidthUnit = "MB/s"
	GBps    BandwidthUnit = "GB/s"
	TBps    BandwidthUnit = "TB/s"
	GiBps   BandwidthUnit = "GiB/s"
	unitNil BandwidthUnit = ""
)

// bytesPerSecond is how many bytes per second one of each unit is.
var bytesPerSecond = map[BandwidthUnit]float64{
	Mbps:  1e6 / 8,
	Gbps:  1e9 / 8,
	Tbps:  1e12 / 8,
	MBps:  1e6,
	GBps:  1e9,
	TBps:  1e12,
	GiBps: 1 << 30,
}

// bandwidthSpellings maps every accepted spelling to its canonical unit.
// Case matters: "b" is bits and "B" bytes.
var bandwidthSpellings = map[string]BandwidthUnit{
	"Mbps": Mbps, "Mb/s": Mbps, "Mbit/s": Mbps,
	"Gbps": Gbps, "Gb/s": Gbps, "Gbit/s": Gbps,
	"Tbps": Tbps, "Tb/s": Tbps, "Tbit/s": Tbps,
	"MB/s": MBps, "MBps": MBps, "MByte/s": MBps,
	"GB/s": GBps, "GBps": GBps, "GByte/s": GBps,
	"TB/s": TBps, "TBps": TBps, "TByte/s": TBps,
	"GiB/s": GiBps, "GiBps": GiBps,
}

// Bandwidth is a data rate as written: a value and its unit. The zero value
// means "not given" (the simulator then uses its documented default).
type Bandwidth struct {
	Value float64
	Unit  BandwidthUnit
}

// GbitPerSec returns v Gbit/s, the usual way to write network line rates.
func GbitPerSec(v float64) Bandwidth { return Bandwidth{v, Gbps} }

// GBytePerSec returns v GB/s (10⁹ bytes per second), the usual way to write
// memory, PCIe and storage bandwidth.
func GBytePerSec(v float64) Bandwidth { return Bandwidth{v, GBps} }

// BytesPerSecond returns the rate in bytes per second; zero when not given.
func (b Bandwidth) BytesPerSecond() float64 {
	return b.Value * bytesPerSecond[b.Unit]
}

// IsZero reports whether the bandwidth was not given.
func (b Bandwidth) IsZero() bool { return b.Value == 0 && b.Unit == unitNil }

// String writes the bandwidth in its canonical form, e.g. "400Gbps".
func (b Bandwidth) String() string {
	if b.IsZero() {
		return ""
	}
	return strconv.FormatFloat(b.Value, 'g', -1, 64) + string(b.Unit)
}

// ParseBandwidth parses "400Gbps", "400 Gb/s", "25GB/s", "7.5GBps" and the
// like. Units are case-sensitive, since "b" is bits and "B" bytes.
func ParseBandwidth(s string) (Bandwidth, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return Bandwidth{}, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	u, ok := bandwidthSpellings[unit]
	if !ok {
		return Bandwidth{}, fmt.Errorf("bandwidth %q: unknown unit %q (use Mbps, Gbps, Tbps, MB/s, GB/s, TB/s or GiB/s)", s, unit)
	}
	return Bandwidth{num, u}, nil
}

// MarshalYAML writes the canonical string form.
func (b Bandwidth) MarshalYAML() (any, error) { return b.String(), nil }

// UnmarshalYAML reads the string form, with the line of any error.
func (b *Bandwidth) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "bandwidth must be a string like \"400Gbps\" or \"25GB/s\"")
	}
	v, err := ParseBandwidth(n.Value)
	if err != nil {
		return typeError(n, err.Error())
	}
	*b = v
	return nil
}

// Size is a capacity in bytes.
type Size int64

// Binary and decimal size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
	KB  Size = 1e3
	MB  Size = 1e6
	GB  Size = 1e9
	TB  Size = 1e12
)

var sizeUnits = []struct {
	name string
	size Size
}{
	{"TiB", TiB}, {"TB", TB}, {"GiB", GiB}, {"GB", GB},
	{"MiB", MiB}, {"MB", MB}, {"KiB", KiB}, {"KB", KB}, {"B", 1},
}

// String writes the size with the largest unit that divides it exactly
// ("80GiB", "7680GB", "1536B"), so that it parses back to the same number.
func (s Size) String() string {
	if s == 0 {
		return "0B"
	}
	for _, u := range sizeUnits {
		if s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// ParseSize parses "80GiB", "1.5TB", "512 MiB" or "4096B". Fractions are
// allowed when the result is a whole number of bytes.
func ParseSize(str string) (Size, error) {
	num, unit, err := splitQuantity(str)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", str, err)
	}
	for _, u := range sizeUnits {
		if unit == u.name {
			v := num * float64(u.size)
			if math.Abs(v) > math.MaxInt64/2 {
				return 0, fmt.Errorf("size %q: larger than %s", str, Size(math.MaxInt64/2/int64(TiB))*TiB)
			}
			if v != math.Trunc(v) {
				return 0, fmt.Errorf("size %q: not a whole number of bytes", str)
			}
			return Size(v), nil
		}
	}
	return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", str, unit)
}

// MarshalYAML writes the canonical string form.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML reads the string form, with the line of any error.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "size must be a string like \"80GiB\"")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeError(n, err.Error())
	}
	*s = v
	return nil
}

// Duration is a time.Duration written as Go writes durations ("2us",
// "1.5ms"; "µs" is accepted too).
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes the duration with Go's notation, using "us" rather than "µs"
// so that files stay ASCII.
func (d Duration) String() string {
	return strings.ReplaceAll(time.Duration(d).String(), "µ", "u")
}

// MarshalYAML writes the canonical string form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads the string form, with the line of any error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "duration must be a string like \"2us\"")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return typeError(n, fmt.Sprintf("duration %q: want a number with a unit (ns, us, ms, s)", n.Value))
	}
	*d = Duration(v)
	return nil
}

// splitQuantity splits "400 Gbps" into 400 and "Gbps".
func splitQuantity(s string) (float64, string, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] == '-' || s[i] == '+' || s[i] == '.' || s[i] == 'e' && i > 0 && isDigit(s[i-1]) || isDigit(s[i])) {
		i++
	}
	if i == 0 {
		return 0, "", fmt.Errorf("want a number followed by a unit")
	}
	num, err := strconv.ParseFloat(s[:i], 64)
	if err != nil || math.IsInf(num, 0) || math.IsNaN(num) {
		return 0, "", fmt.Errorf("%q is not a finite number", s[:i])
	}
	unit := strings.TrimSpace(s[i:])
	if unit == "" {
		return 0, "", fmt.Errorf("missing unit")
	}
	return num, unit, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// typeError reports a bad value as a *yaml.TypeError, which the decoder
// collects (rather than stopping at the first), so that a file with several
// bad values reports all of them.
func typeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
