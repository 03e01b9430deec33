package kvcache

import (
	"fmt"
	"math"
	"time"
)

// CodecProfile is what has been measured of one codec setting on a model's
// KV (engine/quality's `kvloom eval codecs` measures them on stories260K).
type CodecProfile struct {
	Name string // "raw", "fp8", "cachegen:2", …
	// Ratio is decoded bytes per encoded byte (>= any positive value; raw
	// is 1).
	Ratio float64
	// DecodeRate is decoded bytes per second; zero means decoding costs
	// nothing (raw: the payload is the KV).
	DecodeRate float64
	// Loss is the quality lost, lower is better (for example the mean KL
	// divergence of next-token distributions against a full prefill).
	Loss float64
}

// LinkBudget is the situation a chunk is loaded in.
type LinkBudget struct {
	// Bandwidth is the link's rate in bytes per second.
	Bandwidth float64
	// Deadline is the time the load may take; zero means none.
	Deadline time.Duration
	// MaxLoss is the quality bound: profiles with a higher Loss are never
	// chosen.
	MaxLoss float64
	// PreferQuality chooses, among the profiles that meet the deadline, the
	// one with the lowest loss (CacheGen's adaptation to an SLO) instead
	// of the fastest. Without a deadline it changes nothing.
	PreferQuality bool
}

// CodecChoice is ChooseCodec's answer.
type CodecChoice struct {
	Profile CodecProfile
	// Load and Decode are the expected transfer and decode times.
	Load, Decode time.Duration
	// MeetsDeadline is false when even the chosen profile is expected to
	// miss the deadline: the caller should recompute rather than load.
	MeetsDeadline bool
}

// Total is the expected time to have the KV ready.
func (c CodecChoice) Total() time.Duration { return c.Load + c.Decode }

// ChooseCodec picks how to fetch bytes bytes of decoded KV over a link:
// among the profiles within the quality bound it takes the one that
// minimizes expected load time (encoded size / bandwidth) plus decode time
// (bytes / decode rate), ties going to the lower loss; with PreferQuality,
// the lowest-loss profile that meets the deadline when one does.
func ChooseCodec(bytes int64, profiles []CodecProfile, b LinkBudget) (CodecChoice, error) {
	if bytes < 0 || !(b.Bandwidth > 0) || math.IsInf(b.Bandwidth, 0) || b.Deadline < 0 || math.IsNaN(b.MaxLoss) {
		return CodecChoice{}, fmt.Errorf("choose codec: %d bytes, bandwidth %v B/s, deadline %v, max loss %v: %w", bytes, b.Bandwidth, b.Deadline, b.MaxLoss, ErrPolicy)
	}
	var (
		best  CodecChoice
		found bool
	)
	better := func(c CodecChoice) bool {
		if !found {
			return true
		}
		if b.PreferQuality && b.Deadline > 0 && c.MeetsDeadline != best.MeetsDeadline {
			return c.MeetsDeadline
		}
		if b.PreferQuality && b.Deadline > 0 && c.MeetsDeadline && c.Profile.Loss != best.Profile.Loss {
			return c.Profile.Loss < best.Profile.Loss
		}
		if c.Total() != best.Total() {
			return c.Total() < best.Total()
		}
		return c.Profile.Loss < best.Profile.Loss
	}
	for _, p := range profiles {
		if !(p.Ratio > 0) || math.IsInf(p.Ratio, 0) || !(p.DecodeRate >= 0) || math.IsNaN(p.Loss) {
			return CodecChoice{}, fmt.Errorf("choose codec: profile %q has ratio %v, decode rate %v, loss %v: %w", p.Name, p.Ratio, p.DecodeRate, p.Loss, ErrPolicy)
		}
		if p.Loss > b.MaxLoss {
			continue
		}
		c := CodecChoice{Profile: p, Load: seconds(float64(bytes) / p.Ratio / b.Bandwidth)}
		if p.DecodeRate > 0 {
			c.Decode = seconds(float64(bytes) / p.DecodeRate)
		}
		c.MeetsDeadline = b.Deadline == 0 || c.Total() <= b.Deadline
		if better(c) {
			best, found = c, true
		}
	}
	if !found {
		return CodecChoice{}, fmt.Errorf("choose codec: no profile of %d has loss <= %v: %w", len(profiles), b.MaxLoss, ErrPolicy)
	}
	return best, nil
}

func seconds(s float64) time.Duration {
	if s >= float64(math.MaxInt64)/1e9 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * 1e9)
}
