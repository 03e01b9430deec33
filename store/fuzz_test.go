package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// FuzzParse: a tier spec either fails (wrapping ErrConfig, no tiers) or
// parses to a configuration whose String parses back to the same tiers.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"mem:8GiB,disk:/var/lib/kvloom:200GiB,redis://127.0.0.1:6379",
		"mem:1GiB:policy=s3fifo,disk:/a:b:1GiB:admit=2:pack=16MiB",
		"redis-cluster://10.0.0.1:7000?addr=10.0.0.2:7000&ttl=1h&prefix=kv",
		"mem:x,,disk:/y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		cfg, err := Parse(spec)
		if err != nil {
			if len(cfg.Tiers) != 0 || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v with %d tiers", err, len(cfg.Tiers))
			}
			return
		}
		again, err := Parse(cfg.String())
		if err != nil {
			t.Fatalf("String() = %q does not parse: %v", cfg.String(), err)
		}
		if len(again.Tiers) != len(cfg.Tiers) {
			t.Fatalf("round trip: %d tiers, then %d", len(cfg.Tiers), len(again.Tiers))
		}
		for i := range cfg.Tiers {
			a, b := cfg.Tiers[i], again.Tiers[i]
			if a.Kind != b.Kind || a.Path != b.Path || a.Policy != b.Policy || a.AdmitAfter != b.AdmitAfter || a.TTL != b.TTL || a.Prefix != b.Prefix {
				t.Fatalf("tier %d: %+v became %+v", i, a, b)
			}
		}
	})
}

// FuzzRedisMeta: a metadata value read back from Redis either fails (no
// header) or yields a header whose key is the one asked for and whose
// size matches the bytes.
func FuzzRedisMeta(f *testing.F) {
	spec := testSpec(f, 4, 2, 16)
	c := makeChunk(f, spec, 16, 1)
	blob, err := kvcache.AppendBlob(nil, c, nil)
	if err != nil {
		f.Fatal(err)
	}
	h, err := kvcache.ParseHeader(blob, kvcache.DecodeOptions{})
	if err != nil {
		f.Fatal(err)
	}
	meta := append([]byte(redisMetaMagic+"\x00\x00\x04\x00"), blob[:h.MetaSize]...)
	f.Add(meta, c.Key[:])
	f.Add([]byte("KVR1"), c.Key[:])
	f.Add(meta[:40], c.Key[:])
	r := &Redis{cfg: blobConfig{codecs: mustCodecs(f), max: DefaultMaxBlobBytes}}
	f.Fuzz(func(t *testing.T, b, key []byte) {
		var k matcher.ChunkKey
		copy(k[:], key)
		h, minT, err := r.parseMeta(b, k)
		if err != nil {
			if h != nil {
				t.Fatal("error with a header")
			}
			return
		}
		if h.Key != k || len(b)-8 != h.MetaSize || minT < 0 {
			t.Fatalf("accepted metadata: key %v (want %v), meta %d of %d bytes", h.Key, k, h.MetaSize, len(b)-8)
		}
		gs := groupLayers(h, max(minT, 1))
		if len(gs) == 0 || gs[0].first != 0 || gs[len(gs)-1].end != h.Shape.Layers {
			t.Fatalf("groups %+v do not cover %d layers", gs, h.Shape.Layers)
		}
	})
}

func mustCodecs(t testing.TB) *kvcache.Codecs {
	cs, err := kvcache.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// FuzzDiskPack: whatever bytes a pack file holds, opening the tier never
// fails or panics because of them, and every chunk it then serves reads
// back verified or fails as a miss.
func FuzzDiskPack(f *testing.F) {
	spec := testSpec(f, 2, 2, 16)
	c := makeChunk(f, spec, 16, 1)
	blob, err := kvcache.AppendBlob(nil, c, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	two := append(append(append([]byte(nil), blob...), make([]byte, int(alignPack(int64(len(blob))))-len(blob))...), blob...)
	f.Add(two)
	f.Add(blob[:200])
	f.Add([]byte("KVLC"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "packs", "0000000000000001.kvp"), b, 0o640); err != nil {
			t.Fatal(err)
		}
		d, err := OpenDisk(t.Context(), DiskOptions{Dir: dir, Capacity: 1 << 30})
		if err != nil {
			t.Fatalf("open over a fuzzed pack: %v", err)
		}
		defer d.Close()
		d.mu.Lock()
		var keys []matcher.ChunkKey
		for k := range d.index {
			keys = append(keys, k)
		}
		d.mu.Unlock()
		for _, k := range keys {
			r, err := d.Get(t.Context(), k, kvcache.AllLayers)
			if err != nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("get %v: %v, want a miss", k, err)
				}
				continue
			}
			if r.Info().Key != k {
				t.Fatalf("get %v served key %v", k, r.Info().Key)
			}
			for l := r.Available().Start; l < r.Available().End; l++ {
				if _, err := r.Layer(t.Context(), l); err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatalf("layer %d: %v, want data or a miss", l, err)
				}
			}
			r.Close()
		}
	})
}
