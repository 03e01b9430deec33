package quality

import (
	"fmt"
	"strconv"
	"strings"
)

// PolicyKind is a way to prefill a prompt whose documents' KV is cached.
type PolicyKind uint8

// The policies of issue 4 §2.
const (
	// Full recomputes everything: the reference.
	Full PolicyKind = iota + 1
	// Reuse stitches every document's KV (RoPE fixed), recomputes nothing.
	Reuse
	// Prefix reuses only the first document's KV (exact: it was computed
	// at the same positions after the same BOS) and prefills the rest.
	Prefix
	// Epic recomputes the first K tokens of every non-prefix document
	// (EPIC's LegoLink).
	Epic
	// Ratio is CacheBlend: it recomputes the Ratio of the non-prefix
	// tokens whose KV deviates most, chosen during the prefill.
	Ratio
)

// Policy is a policy with its parameter.
type Policy struct {
	Kind  PolicyKind
	K     int     // Epic's tokens per document
	Ratio float64 // Ratio's fraction
}

// String is the policy's name as ParsePolicy reads it.
func (p Policy) String() string {
	switch p.Kind {
	case Full:
		return "full"
	case Reuse:
		return "reuse"
	case Prefix:
		return "prefix"
	case Epic:
		return "epic:" + strconv.Itoa(p.K)
	case Ratio:
		return "ratio:" + strconv.FormatFloat(p.Ratio*100, 'g', -1, 64) + "%"
	}
	return fmt.Sprintf("policy(%d)", p.Kind)
}

// ParsePolicy reads "full", "reuse", "prefix", "epic:K" or "ratio:R"
// (R a fraction, or a percentage with %).
func ParsePolicy(s string) (Policy, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	switch {
	case name == "full" && !hasArg:
		return Policy{Kind: Full}, nil
	case name == "reuse" && !hasArg:
		return Policy{Kind: Reuse}, nil
	case name == "prefix" && !hasArg:
		return Policy{Kind: Prefix}, nil
	case name == "epic" && hasArg:
		k, err := strconv.Atoi(arg)
		if err != nil || k < 1 {
			return Policy{}, fmt.Errorf("parse policy %q: k must be a positive integer: %w", s, ErrOptions)
		}
		return Policy{Kind: Epic, K: k}, nil
	case name == "ratio" && hasArg:
		pct := strings.HasSuffix(arg, "%")
		r, err := strconv.ParseFloat(strings.TrimSuffix(arg, "%"), 64)
		if pct {
			r /= 100
		}
		if err != nil || !(r >= 0 && r <= 1) {
			return Policy{}, fmt.Errorf("parse policy %q: ratio must be in [0, 1] or [0%%, 100%%]: %w", s, ErrOptions)
		}
		return Policy{Kind: Ratio, Ratio: r}, nil
	}
	return Policy{}, fmt.Errorf("parse policy %q: want full, reuse, prefix, epic:K or ratio:R: %w", s, ErrOptions)
}

// DefaultPolicies are the policies issue 4 compares, full first.
func DefaultPolicies() []Policy {
	return []Policy{
		{Kind: Full}, {Kind: Reuse}, {Kind: Prefix},
		{Kind: Epic, K: 1}, {Kind: Epic, K: 4}, {Kind: Epic, K: 16},
		{Kind: Ratio, Ratio: 0.05}, {Kind: Ratio, Ratio: 0.15}, {Kind: Ratio, Ratio: 0.30},
	}
}
