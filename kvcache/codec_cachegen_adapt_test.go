package kvcache

import (
	"errors"
	"testing"
	"time"
)

func TestChooseCodec(t *testing.T) {
	// shaped like stories260K's measurements: raw is free to decode, the
	// CacheGen levels trade size against loss
	profiles := []CodecProfile{
		{Name: "raw", Ratio: 1, Loss: 0},
		{Name: "fp8", Ratio: 1.9, DecodeRate: 800e6, Loss: 0.0004},
		{Name: "cachegen:1", Ratio: 2.6, DecodeRate: 300e6, Loss: 0.0001},
		{Name: "cachegen:2", Ratio: 3.6, DecodeRate: 300e6, Loss: 0.001},
		{Name: "cachegen:4", Ratio: 7, DecodeRate: 250e6, Loss: 0.02},
	}
	const mb = int64(1 << 20)
	for _, tc := range []struct {
		name  string
		bytes int64
		b     LinkBudget
		want  string
		meets bool
	}{
		// a fast link: decoding costs more than it saves, raw wins
		{"fast link", 64 * mb, LinkBudget{Bandwidth: 100e9, MaxLoss: 1}, "raw", true},
		// a slow link: the smallest encoding within the bound wins
		{"slow link, loose bound", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 1}, "cachegen:4", true},
		{"slow link, tight bound", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 0.005}, "cachegen:2", true},
		{"slow link, tighter bound", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 0.0002}, "cachegen:1", true},
		// a deadline nothing meets is reported, not hidden
		{"missed deadline", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 1, Deadline: time.Millisecond}, "cachegen:4", false},
		// preferring quality: the lowest loss that still meets the deadline
		// expected totals at 100 MB/s: raw 671ms, fp8 437ms, cachegen:1
		// 482ms, cachegen:2 410ms, cachegen:4 364ms
		{"prefer quality", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 1, Deadline: 450 * time.Millisecond, PreferQuality: true}, "fp8", true},
		{"prefer quality, tighter deadline", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 1, Deadline: 420 * time.Millisecond, PreferQuality: true}, "cachegen:2", true},
		{"prefer quality, deadline missed", 64 * mb, LinkBudget{Bandwidth: 100e6, MaxLoss: 1, Deadline: 200 * time.Millisecond, PreferQuality: true}, "cachegen:4", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ChooseCodec(tc.bytes, profiles, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if c.Profile.Name != tc.want || c.MeetsDeadline != tc.meets {
				t.Fatalf("chose %s (load %v decode %v, meets %v), want %s (meets %v)", c.Profile.Name, c.Load, c.Decode, c.MeetsDeadline, tc.want, tc.meets)
			}
			// brute force: no profile within the bound is faster (or, for
			// PreferQuality, better while meeting the deadline)
			for _, p := range profiles {
				if p.Loss > tc.b.MaxLoss {
					continue
				}
				other, _ := ChooseCodec(tc.bytes, []CodecProfile{p}, tc.b)
				if tc.b.PreferQuality && other.MeetsDeadline && c.MeetsDeadline {
					if p.Loss < c.Profile.Loss {
						t.Errorf("%s meets the deadline with less loss", p.Name)
					}
				} else if !tc.b.PreferQuality && other.Total() < c.Total() {
					t.Errorf("%s is faster (%v < %v)", p.Name, other.Total(), c.Total())
				}
			}
		})
	}
	for _, bad := range []LinkBudget{{Bandwidth: 0, MaxLoss: 1}, {Bandwidth: -1, MaxLoss: 1}, {Bandwidth: 1e9, Deadline: -1, MaxLoss: 1}} {
		if _, err := ChooseCodec(mb, profiles, bad); !errors.Is(err, ErrPolicy) {
			t.Errorf("budget %+v: %v", bad, err)
		}
	}
	if _, err := ChooseCodec(mb, profiles, LinkBudget{Bandwidth: 1e9, MaxLoss: -1}); !errors.Is(err, ErrPolicy) {
		t.Errorf("nothing within the bound: %v", err)
	}
	if _, err := ChooseCodec(mb, []CodecProfile{{Name: "x", Ratio: 0}}, LinkBudget{Bandwidth: 1e9, MaxLoss: 1}); !errors.Is(err, ErrPolicy) {
		t.Errorf("bad profile: %v", err)
	}
}
