package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// fuzzBlobs are two blobs of the smallest shape the format allows (2
// layers, 1 KV head of 2, 1 token: 328 bytes each, most of it header), so
// that an input the fuzzer finds interesting is small to minimize.
func fuzzBlobs(f *testing.F) (a, b []byte) {
	spec := testSpec(f, 2, 1, 2)
	a, err := kvcache.AppendBlob(nil, makeChunk(f, spec, 1, 1), nil)
	if err != nil {
		f.Fatal(err)
	}
	b, err = kvcache.AppendBlob(nil, makeChunk(f, spec, 1, 2), nil)
	if err != nil {
		f.Fatal(err)
	}
	return a, b
}

// layoutPack is a pack from fuzz input: b[:split], zeros up to the next
// 4 KiB boundary (where the scanner looks for the next blob), then
// b[split:]; a split of 0 or past the end leaves b whole. A two-blob pack
// is then a ~660-byte input rather than a 4.4 KB one whose padding the
// fuzzer would mutate and minimize byte by byte.
func layoutPack(b []byte, split uint16) []byte {
	at := int(split)
	if at <= 0 || at >= len(b) {
		return b
	}
	pack := make([]byte, alignPack(int64(at))+int64(len(b)-at))
	copy(pack, b[:at])
	copy(pack[alignPack(int64(at)):], b[at:])
	return pack
}

// FuzzPackScan: the index a restart rebuilds from a pack file's bytes
// either fails as a whole (nothing indexed) or lists blobs that start at
// 4 KiB boundaries, follow each other without overlap, lie inside the
// pack, and whose headers parse to the key and size indexed. It runs the
// scanner on the bytes alone (no files), so it executes in microseconds
// and minimizes multi-blob inputs quickly; FuzzDiskPack covers the tier
// end to end.
func FuzzPackScan(f *testing.F) {
	a, b := fuzzBlobs(f)
	two := append(slices.Clone(a), b...)
	n := uint16(len(a))
	f.Add(a, uint16(0))
	f.Add(two, n)
	tomb := slices.Clone(two)
	copy(tomb, tombstoneMagic) // the first blob deleted
	f.Add(tomb, n)
	f.Add(two[:len(two)-20], n) // the second blob cut short
	f.Add(append(slices.Clone(a), "KVLC"...), n)
	d := &Disk{cfg: blobConfig{codecs: mustCodecs(f), max: DefaultMaxBlobBytes}}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		pack := layoutPack(in, split)
		blobs, err := d.scanBlobs(bytes.NewReader(pack), int64(len(pack)), "fuzz")
		if err != nil {
			if blobs != nil {
				t.Fatalf("error %v with %d blobs", err, len(blobs))
			}
			return
		}
		next := int64(0)
		for _, sb := range blobs {
			if sb.off%packAlign != 0 || sb.off < next || sb.size <= 0 || sb.off+sb.size > int64(len(pack)) {
				t.Fatalf("blob %+v in a %d-byte pack (next free offset %d)", sb, len(pack), next)
			}
			h, err := kvcache.ParseHeader(pack[sb.off:sb.off+sb.size], kvcache.DecodeOptions{Codecs: d.cfg.codecs})
			if err != nil || h.Key != sb.key || h.Size != sb.size {
				t.Fatalf("indexed blob %+v: header %+v, %v", sb, h, err)
			}
			next = alignPack(sb.off + sb.size)
		}
	})
}

// FuzzDiskPack: whatever bytes a pack file holds, opening the tier never
// fails or panics because of them, and every chunk it then serves reads
// back verified or fails as a miss. The pack is laid out as in
// FuzzPackScan.
//
// Built to be effective within make fuzz's 10 s: its seeds are single
// smallest-shape blobs (multi-blob packs are FuzzPackScan's: an
// interesting 660-byte input takes this target longer than 10 s to
// minimize), and every execution reuses one directory, on tmpfs where
// there is one: each execution creates, renames and unlinks files, which
// on the VM's ext4 costs ~2.5 ms an execution in a fresh t.TempDir
// against ~0.1 ms on /dev/shm.
func FuzzDiskPack(f *testing.F) {
	a, _ := fuzzBlobs(f)
	f.Add(a, uint16(0))
	flipped := slices.Clone(a)
	flipped[len(flipped)-3] ^= 0x10 // in the last layer's payload
	f.Add(flipped, uint16(0))
	f.Add(append(slices.Clone(a), "KVLC"...), uint16(len(a)))
	f.Add(a[:40], uint16(0))
	// The tier's directory outlives executions: each one rewrites the
	// only pack file, which OpenDisk indexes, quarantines or removes, and
	// nothing else in the directory is read on open (tmp/ is emptied,
	// quarantine/ is only written).
	dir := fuzzDir(f)
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o750); err != nil {
		f.Fatal(err)
	}
	packPath := filepath.Join(dir, "packs", "0000000000000001.kvp")
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		if err := os.WriteFile(packPath, layoutPack(b, split), 0o640); err != nil {
			t.Fatal(err)
		}
		d, err := OpenDisk(t.Context(), DiskOptions{Dir: dir, Capacity: 1 << 30, QuarantineKeep: 1})
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

// fuzzDir is a directory for one fuzz worker's executions: on /dev/shm
// (tmpfs) when the machine has it, else in the test's temporary directory.
func fuzzDir(f *testing.F) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "kvloom-fuzz-"); err == nil {
			f.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return f.TempDir()
}
