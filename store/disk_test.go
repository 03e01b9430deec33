package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

func openDisk(t *testing.T, dir string, spec *kvcache.ModelSpec, capacity int64, opts DiskOptions) *Disk {
	t.Helper()
	opts.Dir, opts.Model, opts.Capacity = dir, spec, capacity
	d, err := OpenDisk(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func packFiles(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, sub, e.Name()))
	}
	return out
}

func encodeAll(t *testing.T, cs ...*kvcache.Chunk) [][]byte {
	t.Helper()
	var out [][]byte
	for _, c := range cs {
		b, err := kvcache.AppendBlob(nil, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// Chunks written in one batch share a pack file; a restart rebuilds the
// index from blob headers and serves them again; leftovers of a crash in
// tmp/ are removed.
func TestDiskPacksAndRestart(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{PackBytes: 1 << 20})
	var cs []*kvcache.Chunk
	for i := range 10 {
		cs = append(cs, makeChunk(t, spec, 64, uint64(i)))
	}
	if err := d.PutBlobs(t.Context(), encodeAll(t, cs...)); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(t.Context(), makeChunk(t, spec, 64, 99)); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, dir, "packs")); n != 2 {
		t.Fatalf("%d pack files for one batch of 10 and one single put, want 2", n)
	}
	for _, c := range cs {
		mustGet(t, d, c)
	}
	d.Close()
	// A crash while writing leaves a temporary file.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "00000000000000ff.tmp"), []byte("half a pack"), 0o640); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	if st := d2.Stats(); st.Entries != 11 || st.Files != 2 {
		t.Fatalf("after restart: %d entries in %d files, want 11 in 2", st.Entries, st.Files)
	}
	for _, c := range cs {
		mustGet(t, d2, c)
	}
	if left := packFiles(t, dir, "tmp"); len(left) != 0 {
		t.Fatalf("tmp/ holds %v after open, want it emptied", left)
	}
	// Another model's reader ignores the packs (and serves nothing wrong).
	other := testSpec(t, 4, 2, 16)
	other.WeightsID = "other"
	d2.Close()
	d3 := openDisk(t, dir, other, 64<<20, DiskOptions{})
	mustMiss(t, d3, cs[0].Key)
}

func TestDiskCapacityEvictsPacks(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	c0 := makeChunk(t, spec, 64, 0)
	per := alignPack(blobSize(c0))
	d := openDisk(t, dir, spec, 4*per, DiskOptions{})
	for i := range 10 {
		if err := d.Put(t.Context(), makeChunk(t, spec, 64, uint64(i))); err != nil {
			t.Fatal(err)
		}
		if st := d.Stats(); st.Bytes > st.Capacity {
			t.Fatalf("after %d puts: %d bytes, capacity %d", i+1, st.Bytes, st.Capacity)
		}
	}
	st := d.Stats()
	if st.Entries != 4 || st.Evictions != 6 || len(packFiles(t, dir, "packs")) != 4 {
		t.Fatalf("stats %+v, files %d: want 4 entries, 6 evictions, 4 files", st, len(packFiles(t, dir, "packs")))
	}
	mustMiss(t, d, c0.Key)
	mustGet(t, d, makeChunk(t, spec, 64, 9))
	if err := d.Put(t.Context(), makeChunk(t, testSpec(t, 64, 8, 128), 64, 1)); err == nil {
		t.Fatal("put of another model's chunk succeeded")
	}
}

// corrupt applies f to the only pack file and returns its path.
func corruptPack(t *testing.T, dir string, f func(path string, b []byte) []byte) {
	t.Helper()
	files := packFiles(t, dir, "packs")
	if len(files) != 1 {
		t.Fatalf("%d pack files, want 1", len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[0], f(files[0], b), 0o640); err != nil {
		t.Fatal(err)
	}
}

// A bit flip or a truncation is a miss, never wrong bytes; the pack is
// quarantined; other packs keep being served.
func TestDiskCorruptionIsQuarantined(t *testing.T) {
	spec := smallSpec(t)
	c := makeChunk(t, spec, 64, 1)
	blob := encodeAll(t, c)[0]
	h, err := kvcache.ParseHeader(blob, kvcache.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mangle func(path string, b []byte) []byte
		atGet  bool // detected when opening (header) rather than at a layer
	}{
		{"bit flip in layer 2", func(_ string, b []byte) []byte { b[h.Table[2].Offset+5] ^= 0x10; return b }, false},
		{"truncated in layer 3", func(_ string, b []byte) []byte { return b[:h.Table[3].Offset+10] }, false},
		{"truncated in header", func(_ string, b []byte) []byte { return b[:100] }, true},
		{"bit flip in header", func(_ string, b []byte) []byte { b[130] ^= 1; return b }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
			if err := d.Put(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			corruptPack(t, dir, tc.mangle)
			r, err := d.Get(t.Context(), c.Key, kvcache.AllLayers)
			if tc.atGet {
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("get: %v, want ErrNotFound and ErrCorrupt", err)
				}
			} else {
				if err != nil {
					t.Fatalf("get: %v (the header is intact)", err)
				}
				var layerErr error
				for l := range spec.Layers {
					b, err := r.Layer(t.Context(), l)
					if err != nil {
						layerErr = err
						break
					}
					if string(b) != string(c.Layers[l]) {
						t.Fatalf("layer %d: wrong bytes returned", l)
					}
				}
				r.Close()
				if !errors.Is(layerErr, ErrNotFound) || !errors.Is(layerErr, ErrCorrupt) {
					t.Fatalf("reading the layers: %v, want ErrNotFound and ErrCorrupt", layerErr)
				}
			}
			mustMiss(t, d, c.Key)
			if q := packFiles(t, dir, "quarantine"); len(q) != 1 {
				t.Fatalf("quarantine holds %v, want the pack", q)
			}
			if st := d.Stats(); st.Corrupt == 0 || st.Entries != 0 || st.Bytes != 0 {
				t.Fatalf("stats %+v: want a corruption counted and nothing left", st)
			}
			// The tier keeps working.
			c2 := makeChunk(t, spec, 64, 2)
			if err := d.Put(t.Context(), c2); err != nil {
				t.Fatal(err)
			}
			mustGet(t, d, c2)
		})
	}
}

// A pack whose headers do not parse at open is quarantined, the others
// are indexed.
func TestDiskRebuildQuarantinesBadPack(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	a, b := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2)
	for _, c := range []*kvcache.Chunk{a, b} {
		if err := d.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	files := packFiles(t, dir, "packs")
	if err := os.WriteFile(files[0], []byte("KVLC garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	if st := d2.Stats(); st.Entries != 1 || st.Corrupt != 1 {
		t.Fatalf("stats %+v, want 1 entry and 1 corrupt pack", st)
	}
	if len(packFiles(t, dir, "quarantine")) != 1 {
		t.Fatal("the bad pack was not quarantined")
	}
}

func TestDiskAdmitsWhenWantedTwice(t *testing.T) {
	spec := smallSpec(t)
	d := openDisk(t, t.TempDir(), spec, 64<<20, DiskOptions{AdmitAfter: 2})
	c := makeChunk(t, spec, 64, 1)
	if err := d.Put(t.Context(), c); !errors.Is(err, ErrNotAdmitted) {
		t.Fatalf("first put: %v, want ErrNotAdmitted", err)
	}
	mustMiss(t, d, c.Key) // wanted a second time
	if err := d.Put(t.Context(), c); err != nil {
		t.Fatalf("put after being wanted twice: %v", err)
	}
	mustGet(t, d, c)
	if st := d.Stats(); st.Rejected != 1 || st.Puts != 1 {
		t.Fatalf("stats %+v: want 1 rejected and 1 put", st)
	}
}

func TestDiskDeleteRemovesEmptyPack(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	a, b := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2)
	if err := d.PutBlobs(t.Context(), encodeAll(t, a, b)); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(t.Context(), a.Key); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, d, a.Key)
	mustGet(t, d, b)
	if err := d.Delete(t.Context(), b.Key, matcher.ChunkKey{9}); err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, dir, "packs")); n != 0 {
		t.Fatalf("%d pack files after deleting everything, want 0", n)
	}
}

// A file system smaller than the configured capacity: writes fail with
// ErrFull (never a partial pack), the tier lowers its capacity and evicts
// to make room, and keeps serving what it holds.
func TestDiskFullFileSystem(t *testing.T) {
	testutil.RequireRoot(t, "mounting a tmpfs for a full disk")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a 1 MiB tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	spec := testSpec(t, 4, 4, 64) // 64 tokens: 64 KiB a layer, 256 KiB a chunk
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	var stored []*kvcache.Chunk
	var full error
	for i := range 10 {
		c := makeChunk(t, spec, 64, uint64(i))
		if err := d.Put(t.Context(), c); err != nil {
			full = err
			break
		}
		stored = append(stored, c)
	}
	if !errors.Is(full, ErrFull) || !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("filling a 1 MiB file system: %v, want ErrFull wrapping ENOSPC", full)
	}
	if len(stored) == 0 {
		t.Fatal("nothing fit on the file system")
	}
	if left := packFiles(t, dir, "tmp"); len(left) != 0 {
		t.Fatalf("partial packs left in tmp/: %v", left)
	}
	for _, c := range stored {
		mustGet(t, d, c)
	}
	if st := d.Stats(); st.Capacity >= 64<<20 {
		t.Fatalf("capacity %d after ENOSPC, want it lowered", st.Capacity)
	}
	// The next write evicts the oldest pack and fits.
	c := makeChunk(t, spec, 64, 100)
	if err := d.Put(t.Context(), c); err != nil {
		t.Fatalf("put after the capacity was lowered: %v", err)
	}
	mustGet(t, d, c)
	mustGet(t, d, stored[len(stored)-1])
}

func TestDiskOptionErrors(t *testing.T) {
	_, err := OpenDisk(t.Context(), DiskOptions{Capacity: -1, AdmitAfter: 99})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("bad options: %v, want ErrConfig", err)
	}
	for _, want := range []string{"directory is empty", "capacity -1", "admit after 99"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// A deleted chunk stays deleted across a restart, while the rest of its
// pack is served.
func TestDiskDeleteSurvivesRestart(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	a, b := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2)
	if err := d.PutBlobs(t.Context(), encodeAll(t, a, b)); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(t.Context(), a.Key); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2 := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	mustMiss(t, d2, a.Key)
	mustGet(t, d2, b)
	if st := d2.Stats(); st.Entries != 1 || st.Corrupt != 0 {
		t.Fatalf("stats after restart %+v: want 1 entry and nothing corrupt", st)
	}
}
