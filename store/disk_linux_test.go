package store

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A warm blob is read from the page cache alone, without posix_fadvise; a
// cold one (its header is not cached) is advised whole and read from the
// disk. Both read back verified, and readCached, which tells them apart,
// reports what the page cache holds.
func TestDiskWarmAndColdReads(t *testing.T) {
	spec := testSpec(t, 8, 4, 64) // 64 KiB layers
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	c := makeChunk(t, spec, 64, 1)
	if err := d.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	path := d.index[c.Key].pack.path
	d.mu.Unlock()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	probe := make([]byte, 64<<10)
	mustGet(t, d, c)
	if n := readCached(f, probe, 0); n != len(probe) {
		t.Fatalf("warm: %d of %d bytes read from the page cache", n, len(probe))
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	dropCache(f)
	n := readCached(f, probe, 0)
	if fs.Type == unix.TMPFS_MAGIC {
		// tmpfs keeps files in the page cache: nothing to drop, every
		// read is warm.
		t.Logf("%s is tmpfs: no cold reads to test; %d bytes cached", dir, n)
	} else if n == len(probe) {
		t.Fatalf("cold: %d of %d bytes still read from the page cache after dropping it", n, len(probe))
	}
	mustGet(t, d, c) // cold: advised, read from the disk, verified
	if n := readCached(f, probe, 0); n != len(probe) {
		t.Fatalf("after a cold read: %d of %d bytes cached", n, len(probe))
	}
	// Warm header, cold layers: the first layer that is not cached is
	// where the rest of the blob is advised.
	dropCache(f)
	if _, err := f.ReadAt(probe[:headerProbe], 0); err != nil {
		t.Fatal(err)
	}
	mustGet(t, d, c)
}
