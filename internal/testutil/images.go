package testutil

import (
	"crypto/ed25519"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
)

// ImageKey returns a new image-signing key and a key ring that trusts it.
func ImageKey(t testing.TB) (ed25519.PrivateKey, *bitstream.KeyRing) {
	t.Helper()
	pub, priv, err := bitstream.GenerateKey(nil)
	if err != nil {
		t.Fatalf("image key: %v", err)
	}
	return priv, bitstream.NewKeyRing(pub)
}

// ImageManifest returns a valid manifest of kind for tests: matcher
// parameters at the matcher package's defaults (anchors, 64-token minimum
// match, 256-token blocks), 4096-token chunks, a 65536-entry table,
// register map 1.0, and for sim images the pipeline of a
// 250 MHz, 8-lane card on PCIe gen4 x16 and 100 GbE. Tests change what they
// exercise.
func ImageManifest(kind bitstream.Kind, name, version string) bitstream.Manifest {
	m := bitstream.Manifest{
		Name:    name,
		Version: version,
		Kind:    kind,
		RegMap:  bitstream.RegMapVersion{Major: 1, Minor: 0},
		Matcher: bitstream.MatcherParams{
			AnchorWindow: matcher.DefaultMinLen - matcher.DefaultAnchorK + 1, KGram: matcher.DefaultAnchorK,
			MinMatch: matcher.DefaultMinLen, BlockTokens: matcher.DefaultBlockSize, ChunkTokens: 4096, TableCapacity: 65536,
		},
		Build: bitstream.BuildInfo{Time: "2025-01-02T03:04:05Z", Tool: "kvloom tests"},
	}
	if kind == bitstream.KindSim {
		m.Target.Part = "simnic"
		m.Params = bitstream.Pipeline{ClockMHz: 250, Lanes: 8, LookupLatencyCycles: 4, RequestQueueDepth: 256,
			CompletionQueueDepth: 1024, PCIeGbps: 256, NetworkGbps: 100}.Params()
	}
	return m
}

// SignedImage builds an image from m and payloads signed with key (nil
// builds an unsigned one), failing t on error.
func SignedImage(t testing.TB, m bitstream.Manifest, key ed25519.PrivateKey, payloads ...bitstream.Payload) *bitstream.Image {
	t.Helper()
	img, err := bitstream.Build(m, payloads, key)
	if err != nil {
		t.Fatalf("build test image: %v", err)
	}
	return img
}
