package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store/evict"
)

// Disk tier layout (docs/storage.md): under Dir,
//
//	packs/<16 hex>.kvp   pack files: blobs back to back, each at a
//	                     4 KiB-aligned offset, zero padding between
//	tmp/<16 hex>.tmp     a pack being written (removed on open)
//	quarantine/          pack files that failed verification
//
// A pack is written whole to tmp/, fsynced, renamed into packs/ and the
// directory fsynced: a crash leaves either the whole pack or none of it.
// Packs are what the tier evicts (least recently read first), so that a
// chunk store of millions of small chunks is thousands of files, written
// with one fsync per pack, not per chunk.
const (
	packAlign = 4096
	packExt   = ".kvp"
	// DefaultPackBytes is DiskOptions.PackBytes' default.
	DefaultPackBytes = 64 << 20
	// headerProbe is how much of a blob Get reads to find its header; a
	// longer header takes a second read.
	headerProbe = 8 << 10
)

// A deleted blob whose pack still holds live ones gets its magic
// overwritten with tombstoneMagic (one 4-byte write and an fsync), so that
// a restart does not bring it back. The rest of its header is intact, so
// the scan still learns its size and skips it.
var (
	blobMagic      = []byte("KVLC")
	tombstoneMagic = []byte("KVLD")
)

// DiskOptions configure a disk tier. Dir and Capacity are required; the
// zero value of every other field selects its default.
type DiskOptions struct {
	BlobOptions
	// Dir is the tier's directory (created if missing). The tier owns
	// everything under it.
	Dir string
	// Capacity bounds the bytes of pack files. Required, > 0.
	Capacity int64
	// PackBytes is the target size of a pack file: a batch of blobs is
	// split into packs of about this size, and a blob at least this large
	// gets a pack of its own. Zero means DefaultPackBytes.
	PackBytes int64
	// AdmitAfter is how many times a chunk must have been wanted (put, or
	// missed by Get) before it is written; 0 and 1 admit every chunk, 2 is
	// "wanted twice", which keeps one-hit wonders off the SSD. Counts come
	// from a TinyLFU frequency sketch that ages.
	AdmitAfter int
	// QuarantineKeep is how many quarantined pack files are kept for
	// inspection (the oldest are deleted). Zero means 8.
	QuarantineKeep int
	// Logger receives quarantines, evictions under pressure and write
	// failures; nil discards.
	Logger *slog.Logger
}

// Disk is the local disk tier.
type Disk struct {
	cfg        blobConfig
	dir        string
	packsDir   string
	tmpDir     string
	qDir       string
	packBytes  int64
	admitAfter int
	qKeep      int
	log        *slog.Logger
	pool       bufPool

	mu       sync.Mutex
	capacity int64 // lowered when the file system fills up
	index    map[matcher.ChunkKey]diskLoc
	packs    map[uint64]*pack
	used     int64 // bytes of registered packs and packs being written
	nextID   uint64
	tick     uint64
	admit    *evict.Sketch
	closed   bool

	st tierCounters
}

type tierCounters struct {
	hits, misses, puts, putErrors, evictions, deletes, rejected, corrupt, errors, bytesRead, bytesWrite atomic.Int64
}

type diskLoc struct {
	pack      *pack
	off, size int64
}

type pack struct {
	id      uint64
	path    string
	size    int64
	live    int
	lastUse uint64
	keys    []matcher.ChunkKey
}

var _ BlobStore = (*Disk)(nil)

// OpenDisk opens (creating if needed) the disk tier in opts.Dir and
// rebuilds its index from the headers of the blobs in its pack files.
// Leftover temporary files from a crash are removed; a pack whose headers
// do not parse is quarantined.
func OpenDisk(ctx context.Context, opts DiskOptions) (*Disk, error) {
	cfg, err := opts.BlobOptions.resolve()
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	var bad []string
	if opts.Dir == "" {
		bad = append(bad, "directory is empty")
	}
	if opts.Capacity <= 0 {
		bad = append(bad, fmt.Sprintf("capacity %d bytes, want > 0", opts.Capacity))
	}
	if opts.PackBytes < 0 {
		bad = append(bad, fmt.Sprintf("pack size %d bytes, want >= 0", opts.PackBytes))
	}
	if opts.AdmitAfter < 0 || opts.AdmitAfter > 15 {
		bad = append(bad, fmt.Sprintf("admit after %d, want 0..15", opts.AdmitAfter))
	}
	if opts.QuarantineKeep < 0 {
		bad = append(bad, fmt.Sprintf("quarantine keep %d, want >= 0", opts.QuarantineKeep))
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("disk tier %q: %s: %w", opts.Dir, strings.Join(bad, "; "), ErrConfig)
	}
	d := &Disk{
		cfg: cfg, dir: opts.Dir, packBytes: opts.PackBytes, admitAfter: opts.AdmitAfter, qKeep: opts.QuarantineKeep,
		log: opts.Logger, capacity: opts.Capacity,
		index: make(map[matcher.ChunkKey]diskLoc), packs: make(map[uint64]*pack), nextID: 1,
	}
	if d.packBytes == 0 {
		d.packBytes = DefaultPackBytes
	}
	if d.qKeep == 0 {
		d.qKeep = 8
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.admitAfter > 1 {
		d.admit = evict.NewSketch(1 << 16)
	}
	d.packsDir = filepath.Join(d.dir, "packs")
	d.tmpDir = filepath.Join(d.dir, "tmp")
	d.qDir = filepath.Join(d.dir, "quarantine")
	for _, p := range []string{d.packsDir, d.tmpDir, d.qDir} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			return nil, fmt.Errorf("disk tier: %w", err)
		}
	}
	if err := d.clearTmp(); err != nil {
		return nil, err
	}
	if err := d.rebuild(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Disk) clearTmp() error {
	ents, err := os.ReadDir(d.tmpDir)
	if err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(d.tmpDir, e.Name())
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("disk tier: remove leftover %s: %w", p, err)
		}
		d.log.Info("disk_tmp_removed", "file", p)
	}
	return nil
}

// rebuild scans every pack's blob headers (not payloads: those are
// verified when read) and fills the index.
func (d *Disk) rebuild(ctx context.Context) error {
	ents, err := os.ReadDir(d.packsDir)
	if err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		id, err := strconv.ParseUint(strings.TrimSuffix(name, packExt), 16, 64)
		if !strings.HasSuffix(name, packExt) || err != nil || !e.Type().IsRegular() {
			d.log.Warn("disk_unknown_file", "file", filepath.Join(d.packsDir, name))
			continue
		}
		p := &pack{id: id, path: filepath.Join(d.packsDir, name), lastUse: id}
		locs, size, err := d.scanPack(p)
		if err != nil {
			d.st.corrupt.Add(1)
			d.quarantineFile(p.path, err)
			continue
		}
		p.size = size
		d.packs[id] = p
		d.used += size
		d.nextID = max(d.nextID, id+1)
		for _, l := range locs {
			if old, ok := d.index[l.key]; ok {
				if old.pack.id > id {
					continue // the newer pack's copy wins
				}
				old.pack.live--
			}
			d.index[l.key] = diskLoc{pack: p, off: l.off, size: l.size}
			p.live++
			p.keys = append(p.keys, l.key)
		}
	}
	d.tick = d.nextID
	// Packs holding nothing live (superseded copies, other models) are
	// dead weight.
	for _, p := range d.packs {
		if p.live == 0 {
			d.dropPackLocked(p)
			d.removeFile(p.path)
		}
	}
	for d.used > d.capacity && len(d.packs) > 0 {
		d.evictOneLocked()
	}
	return nil
}

type scannedBlob struct {
	key       matcher.ChunkKey
	off, size int64
}

// scanPack reads the header of every blob in a pack file.
func (d *Disk) scanPack(p *pack) ([]scannedBlob, int64, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	out, err := d.scanBlobs(f, size, p.path)
	if err != nil {
		return nil, 0, err
	}
	return out, size, nil
}

// scanBlobs reads the header of every blob in a pack of size bytes (named
// name in errors): blobs start at 4 KiB-aligned offsets, a tombstoned one
// is skipped, and one of another model (when the tier serves one model)
// is left out. Any header that does not parse, or a blob that runs past
// the end, fails the whole pack.
func (d *Disk) scanBlobs(r io.ReaderAt, size int64, name string) ([]scannedBlob, error) {
	var out []scannedBlob
	magic := make([]byte, len(blobMagic))
	for off := int64(0); off < size; {
		var hr io.Reader = io.NewSectionReader(r, off, size-off)
		deleted := false
		if _, err := r.ReadAt(magic, off); err == nil && bytes.Equal(magic, tombstoneMagic) {
			deleted = true
			hr = io.MultiReader(bytes.NewReader(blobMagic), io.NewSectionReader(r, off+int64(len(magic)), size-off-int64(len(magic))))
		}
		h, err := kvcache.ReadHeader(hr, kvcache.DecodeOptions{Codecs: d.cfg.codecs, MaxBytes: d.cfg.max})
		if err != nil {
			return nil, fmt.Errorf("pack %s: blob at offset %d: %w", name, off, err)
		}
		if off+h.Size > size {
			return nil, fmt.Errorf("pack %s: blob at offset %d declares %d bytes, file has %d: %w", name, off, h.Size, size-off, kvcache.ErrTruncated)
		}
		if !deleted && (d.cfg.model == nil || (h.Model == d.cfg.model.Fingerprint() && h.Shape == d.cfg.model.Shape())) {
			out = append(out, scannedBlob{key: h.Key, off: off, size: h.Size})
		}
		off = alignPack(off + h.Size)
	}
	return out, nil
}

func alignPack(n int64) int64 { return (n + packAlign - 1) &^ (packAlign - 1) }

// Get implements Store. The header is read and checked at once; each layer
// is read and its checksum verified when asked for. A blob that fails
// verification is quarantined (with the rest of its pack) and reported as
// ErrNotFound wrapping ErrCorrupt.
func (d *Disk) Get(ctx context.Context, key matcher.ChunkKey, layers LayerRange) (kvcache.ChunkReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("disk tier get %v: %w", key, ErrClosed)
	}
	loc, ok := d.index[key]
	if !ok {
		if d.admit != nil {
			d.admit.Add(keyHash(key))
		}
		d.mu.Unlock()
		d.st.misses.Add(1)
		return nil, fmt.Errorf("disk tier get %v: %w", key, ErrNotFound)
	}
	d.tick++
	loc.pack.lastUse = d.tick
	d.mu.Unlock()

	f, err := os.Open(loc.pack.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Evicted or quarantined since the lookup.
			d.st.misses.Add(1)
			return nil, fmt.Errorf("disk tier get %v: %w", key, ErrNotFound)
		}
		d.st.errors.Add(1)
		return nil, fmt.Errorf("disk tier get %v: %w: %w", key, ErrUnavailable, err)
	}
	r, err := d.openReader(f, loc, key, layers)
	if err != nil {
		f.Close()
		if errors.Is(err, kvcache.ErrLayerRange) {
			return nil, fmt.Errorf("disk tier get %v: %w", key, err)
		}
		d.st.misses.Add(1)
		return nil, fmt.Errorf("disk tier get %v: %w: %w", key, ErrNotFound, err)
	}
	d.st.hits.Add(1)
	return r, nil
}

// missed records a miss of k as Get would (the admission filter's count),
// without looking it up.
func (d *Disk) missed(k matcher.ChunkKey) {
	d.mu.Lock()
	if d.admit != nil && !d.closed {
		d.admit.Add(keyHash(k))
	}
	d.mu.Unlock()
	d.st.misses.Add(1)
}

func (d *Disk) openReader(f *os.File, loc diskLoc, key matcher.ChunkKey, layers LayerRange) (*diskReader, error) {
	probe := d.pool.get(int(min(headerProbe, loc.size)))
	defer d.pool.put(probe)
	// A warm blob is read from the page cache alone. A cold one (its
	// header is not cached) gets posix_fadvise(WILLNEED) over the whole
	// blob first, so that its layers stream in while the header is read
	// and checked; advising a warm blob would only cost CPU (readCached).
	n := readCached(f, probe, loc.off)
	advised := n < len(probe)
	if advised {
		readAhead(f, loc.off, loc.size)
		if _, err := f.ReadAt(probe[n:], loc.off+int64(n)); err != nil {
			return nil, d.corrupted(loc.pack, fmt.Errorf("read header at offset %d of %s: %w: %w", loc.off, loc.pack.path, kvcache.ErrTruncated, err))
		}
	}
	if bytes.HasPrefix(probe, tombstoneMagic) {
		return nil, fmt.Errorf("blob at offset %d of %s was deleted", loc.off, loc.pack.path)
	}
	opts := d.cfg.decodeOptions(kvcache.AllLayers)
	h, err := kvcache.ParseHeader(probe, opts)
	var meta []byte
	if errors.Is(err, kvcache.ErrTruncated) && len(probe) == headerProbe {
		h, meta, err = d.readLongHeader(f, loc, opts)
	} else if err == nil {
		meta = slices.Clone(probe[:h.MetaSize])
	}
	if err != nil {
		if errors.Is(err, kvcache.ErrModelMismatch) || errors.Is(err, kvcache.ErrSaltMismatch) {
			return nil, err // not ours to serve, not corrupt
		}
		return nil, d.corrupted(loc.pack, fmt.Errorf("header at offset %d of %s: %w", loc.off, loc.pack.path, err))
	}
	if err := checkKey(h, key); err != nil {
		return nil, d.corrupted(loc.pack, fmt.Errorf("blob at offset %d of %s: %w", loc.off, loc.pack.path, err))
	}
	if h.Size != loc.size {
		return nil, d.corrupted(loc.pack, fmt.Errorf("blob at offset %d of %s: %d bytes, index says %d: %w", loc.off, loc.pack.path, h.Size, loc.size, ErrCorrupt))
	}
	rng, err := resolveRange(layers, h.Shape.Layers)
	if err != nil {
		return nil, err
	}
	codec, err := d.cfg.codecs.Lookup(h.Codec)
	if err != nil {
		return nil, err
	}
	r := &diskReader{d: d, pack: loc.pack, f: f, base: loc.off, hdr: h, metaB: meta, codec: codec, rng: rng,
		slots: make([]diskSlot, h.Shape.Layers)}
	r.advised.Store(advised)
	return r, nil
}

func (d *Disk) readLongHeader(f *os.File, loc diskLoc, opts kvcache.DecodeOptions) (*kvcache.Header, []byte, error) {
	sr := io.NewSectionReader(f, loc.off, loc.size)
	h, err := kvcache.ReadHeader(sr, opts)
	if err != nil {
		return nil, nil, err
	}
	meta := make([]byte, h.MetaSize)
	if _, err := f.ReadAt(meta, loc.off); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", kvcache.ErrTruncated, err)
	}
	return h, meta, nil
}

// corrupted quarantines p and returns err marked ErrCorrupt.
func (d *Disk) corrupted(p *pack, err error) error {
	d.st.corrupt.Add(1)
	d.mu.Lock()
	registered := d.packs[p.id] == p
	if registered {
		d.dropPackLocked(p)
	}
	d.mu.Unlock()
	if registered {
		d.quarantineFile(p.path, err)
	}
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// dropPackLocked removes p and its chunks from the index.
func (d *Disk) dropPackLocked(p *pack) {
	for _, k := range p.keys {
		if loc, ok := d.index[k]; ok && loc.pack == p {
			delete(d.index, k)
		}
	}
	delete(d.packs, p.id)
	d.used -= p.size
}

// quarantineFile moves a pack file aside and trims the quarantine.
func (d *Disk) quarantineFile(path string, reason error) {
	dst := filepath.Join(d.qDir, fmt.Sprintf("%s.%d", filepath.Base(path), time.Now().UnixNano()))
	if err := os.Rename(path, dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("disk_quarantine_failed", "file", path, "err", err)
		d.removeFile(path)
		return
	}
	d.log.Warn("disk_pack_quarantined", "file", path, "to", dst, "reason", reason.Error())
	ents, err := os.ReadDir(d.qDir)
	if err != nil || len(ents) <= d.qKeep {
		return
	}
	infos := make([]fs.FileInfo, 0, len(ents))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			infos = append(infos, fi)
		}
	}
	slices.SortFunc(infos, func(a, b fs.FileInfo) int { return a.ModTime().Compare(b.ModTime()) })
	for _, fi := range infos[:max(len(infos)-d.qKeep, 0)] {
		d.removeFile(filepath.Join(d.qDir, fi.Name()))
	}
}

func (d *Disk) removeFile(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("disk_remove_failed", "file", path, "err", err)
	}
}

// evictOneLocked drops the least recently read pack and removes its file.
func (d *Disk) evictOneLocked() {
	var victim *pack
	for _, p := range d.packs {
		if victim == nil || p.lastUse < victim.lastUse {
			victim = p
		}
	}
	if victim == nil {
		return
	}
	d.dropPackLocked(victim)
	d.st.evictions.Add(int64(victim.live))
	d.removeFile(victim.path)
}

// Put implements Store.
func (d *Disk) Put(ctx context.Context, c *kvcache.Chunk) error {
	blob, h, err := d.cfg.encode(c)
	if err != nil {
		d.st.putErrors.Add(1)
		return fmt.Errorf("disk tier: %w", err)
	}
	return d.putVerified(ctx, []verified{{blob: blob, hdr: h}})
}

// PutBlobs implements BlobStore: the blobs that pass verification and
// admission are written together, in packs of about PackBytes.
func (d *Disk) PutBlobs(ctx context.Context, blobs [][]byte) error {
	items, errs := d.cfg.verifyAll("disk tier", blobs, &d.st.putErrors)
	if err := d.putVerified(ctx, items); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// verified is a blob whose checksums are known good.
type verified struct {
	blob []byte
	hdr  *kvcache.Header
}

// putVerified admits, packs and writes blobs whose checksums are known
// good (Put, PutBlobs, promotions, write-back).
func (d *Disk) putVerified(ctx context.Context, items []verified) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("disk tier put: %w", ErrClosed)
	}
	var keep []verified
	var notAdmitted int
	seen := make(map[matcher.ChunkKey]bool, len(items))
	for _, it := range items {
		k := it.hdr.Key
		if _, ok := d.index[k]; ok || seen[k] {
			continue
		}
		if d.admit != nil {
			d.admit.Add(keyHash(k))
			if d.admit.Estimate(keyHash(k)) < d.admitAfter {
				notAdmitted++
				continue
			}
		}
		seen[k] = true
		keep = append(keep, it)
	}
	d.mu.Unlock()
	d.st.rejected.Add(int64(notAdmitted))
	var errs []error
	for len(keep) > 0 {
		n, size := 0, int64(0)
		for n < len(keep) && (n == 0 || size+alignPack(keep[n].hdr.Size) <= d.packBytes) {
			size += alignPack(keep[n].hdr.Size)
			n++
		}
		if err := d.writePack(ctx, keep[:n], size); err != nil {
			errs = append(errs, err)
		}
		keep = keep[n:]
	}
	if len(errs) == 0 && notAdmitted > 0 && notAdmitted == len(items) {
		return fmt.Errorf("disk tier put: %d chunk(s) not wanted %d times yet: %w", notAdmitted, d.admitAfter, ErrNotAdmitted)
	}
	return errors.Join(errs...)
}

// writePack writes one pack file crash-safely and indexes its blobs.
func (d *Disk) writePack(ctx context.Context, items []verified, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	if size > d.capacity {
		d.mu.Unlock()
		d.st.putErrors.Add(int64(len(items)))
		return fmt.Errorf("disk tier put: %d-byte pack, capacity %d: %w", size, d.capacity, ErrTooLarge)
	}
	for d.used+size > d.capacity && len(d.packs) > 0 {
		d.evictOneLocked()
	}
	if d.used+size > d.capacity {
		d.mu.Unlock()
		d.st.putErrors.Add(int64(len(items)))
		return fmt.Errorf("disk tier put: %d bytes, %d of %d reserved by writes in progress: %w", size, d.used, d.capacity, ErrFull)
	}
	d.used += size
	id := d.nextID
	d.nextID++
	d.mu.Unlock()

	p := &pack{id: id, path: filepath.Join(d.packsDir, fmt.Sprintf("%016x%s", id, packExt)), size: size}
	offs, err := d.writeFile(p, items)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.used -= size
		d.st.putErrors.Add(int64(len(items)))
		d.st.errors.Add(1)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// The file system is smaller than the configured capacity:
			// live with what fits, and make room by evicting next time.
			newCap := max(d.used, 0)
			d.log.Warn("disk_full", "dir", d.dir, "capacity", d.capacity, "lowered_to", newCap, "err", err)
			d.capacity = newCap
			return fmt.Errorf("disk tier put: write pack %s: %w: %w", p.path, ErrFull, err)
		}
		return fmt.Errorf("disk tier put: write pack %s: %w: %w", p.path, ErrUnavailable, err)
	}
	if d.closed {
		d.used -= size
		d.removeFile(p.path)
		return fmt.Errorf("disk tier put: %w", ErrClosed)
	}
	d.tick++
	p.lastUse = d.tick
	d.packs[id] = p
	for i, it := range items {
		k := it.hdr.Key
		if old, ok := d.index[k]; ok {
			old.pack.live-- // written concurrently by another batch: keep the newest
		}
		d.index[k] = diskLoc{pack: p, off: offs[i], size: it.hdr.Size}
		p.live++
		p.keys = append(p.keys, k)
		d.st.puts.Add(1)
		d.st.bytesWrite.Add(it.hdr.Size)
	}
	return nil
}

var zeroPad [packAlign]byte

// writeFile writes items to a temporary file, fsyncs it, renames it into
// packs/ and fsyncs the directory. It returns each blob's offset.
func (d *Disk) writeFile(p *pack, items []verified) (offs []int64, err error) {
	tmp := filepath.Join(d.tmpDir, fmt.Sprintf("%016x.tmp", p.id))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			d.removeFile(tmp)
		}
	}()
	off := int64(0)
	for _, it := range items {
		offs = append(offs, off)
		if _, err := f.Write(it.blob); err != nil {
			return nil, err
		}
		end := off + int64(len(it.blob))
		if pad := alignPack(end) - end; pad > 0 {
			if _, err := f.Write(zeroPad[:pad]); err != nil {
				return nil, err
			}
		}
		off = alignPack(end)
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return nil, err
	}
	if err := syncDir(d.packsDir); err != nil {
		d.removeFile(p.path)
		return nil, err
	}
	return offs, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Has implements Store.
func (d *Disk) Has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error) {
	out := make([]bool, len(keys))
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, k := range keys {
		_, out[i] = d.index[k]
	}
	return out, nil
}

func (d *Disk) contains(k matcher.ChunkKey) bool {
	d.mu.Lock()
	_, ok := d.index[k]
	d.mu.Unlock()
	return ok
}

// Delete implements Store. A pack's file is removed when nothing in it is
// live any more; otherwise the deleted blobs are tombstoned in place so
// that a restart does not bring them back.
func (d *Disk) Delete(ctx context.Context, keys ...matcher.ChunkKey) error {
	tomb := map[string][]int64{}
	d.mu.Lock()
	for _, k := range keys {
		loc, ok := d.index[k]
		if !ok {
			continue
		}
		delete(d.index, k)
		d.st.deletes.Add(1)
		loc.pack.live--
		if loc.pack.live == 0 && d.packs[loc.pack.id] == loc.pack {
			d.dropPackLocked(loc.pack)
			d.removeFile(loc.pack.path)
			delete(tomb, loc.pack.path)
			continue
		}
		tomb[loc.pack.path] = append(tomb[loc.pack.path], loc.off)
	}
	d.mu.Unlock()
	var errs []error
	for path, offs := range tomb {
		if err := writeTombstones(path, offs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.st.errors.Add(1)
			errs = append(errs, fmt.Errorf("disk tier delete: tombstone in %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

func writeTombstones(path string, offs []int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	for _, off := range offs {
		if _, err := f.WriteAt(tombstoneMagic, off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Stats implements Store.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	entries, used, files, capacity := int64(len(d.index)), d.used, int64(len(d.packs)), d.capacity
	d.mu.Unlock()
	return Stats{
		Tier: "disk:" + d.dir, Up: true, Entries: entries, Bytes: used, Capacity: capacity, Files: files,
		Hits: d.st.hits.Load(), Misses: d.st.misses.Load(), Puts: d.st.puts.Load(), PutErrors: d.st.putErrors.Load(),
		Evictions: d.st.evictions.Load(), Deletes: d.st.deletes.Load(), Rejected: d.st.rejected.Load(),
		Corrupt: d.st.corrupt.Load(), Errors: d.st.errors.Load(), BytesRead: d.st.bytesRead.Load(), BytesWrite: d.st.bytesWrite.Load(),
	}
}

// Close implements Store. Files stay on disk for the next OpenDisk.
func (d *Disk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// diskReader reads one blob's layers from its pack file on demand.
type diskReader struct {
	d     *Disk
	pack  *pack
	f     *os.File
	base  int64
	hdr   *kvcache.Header
	metaB []byte
	codec kvcache.Codec
	rng   LayerRange

	closeMu sync.RWMutex // Layer holds it shared, Close exclusively
	closed  bool
	slots   []diskSlot
	// advised is set once the kernel was asked to read the rest of the
	// blob ahead (see read).
	advised atomic.Bool
}

type diskSlot struct {
	mu      sync.Mutex
	raw     []byte // pooled read buffer (encoded payload)
	decoded []byte
}

func (r *diskReader) Info() *kvcache.ChunkInfo      { return &r.hdr.ChunkInfo }
func (r *diskReader) Available() kvcache.LayerRange { return r.rng }

// Header returns the blob's header.
func (r *diskReader) Header() *kvcache.Header { return r.hdr }

func (r *diskReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if !r.rng.Contains(l) {
		return nil, fmt.Errorf("disk reader %v: layer %d not in [%d, %d): %w", r.hdr.Key, l, r.rng.Start, r.rng.End, kvcache.ErrLayerRange)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		return nil, fmt.Errorf("disk reader %v: layer %d: %w", r.hdr.Key, l, ErrClosed)
	}
	s := &r.slots[l]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.decoded != nil {
		return s.decoded, nil
	}
	e := r.hdr.Table[l]
	buf := r.d.pool.get(int(e.Length))
	if err := r.read(buf, r.base+e.Offset); err != nil {
		r.d.pool.put(buf)
		return nil, fmt.Errorf("disk reader %v: layer %d: %w: %w", r.hdr.Key, l, ErrNotFound,
			r.d.corrupted(r.pack, fmt.Errorf("read %d bytes at offset %d of %s: %w: %w", e.Length, r.base+e.Offset, r.pack.path, kvcache.ErrTruncated, err)))
	}
	dec, err := r.hdr.DecodeLayer(r.codec, l, buf, nil)
	if err != nil {
		r.d.pool.put(buf)
		return nil, fmt.Errorf("disk reader %v: layer %d: %w: %w", r.hdr.Key, l, ErrNotFound,
			r.d.corrupted(r.pack, fmt.Errorf("blob at offset %d of %s: %w", r.base, r.pack.path, err)))
	}
	s.raw, s.decoded = buf, dec
	r.d.st.bytesRead.Add(int64(len(dec)))
	return dec, nil
}

// read fills p from offset off of the pack. While the blob looks warm it
// takes what the page cache holds without touching the disk; at the first
// byte that is not cached it asks the kernel, once, to read the rest of the
// blob ahead (cold blobs stream in while earlier layers are checked), and
// reads the remainder normally.
func (r *diskReader) read(p []byte, off int64) error {
	n := 0
	if !r.advised.Load() {
		n = readCached(r.f, p, off)
		if n == len(p) {
			return nil
		}
		if r.advised.CompareAndSwap(false, true) {
			from := off + int64(n)
			readAhead(r.f, from, r.base+r.hdr.Size-from)
		}
	}
	_, err := r.f.ReadAt(p[n:], off+int64(n))
	return err
}

func (r *diskReader) meta() []byte { return r.metaB }

// encoded returns layer l's payload if it has been read.
func (r *diskReader) encoded(l int) []byte {
	s := &r.slots[l]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw
}

func (r *diskReader) Close() error {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	for i := range r.slots {
		if r.slots[i].raw != nil {
			r.d.pool.put(r.slots[i].raw)
			r.slots[i].raw, r.slots[i].decoded = nil, nil
		}
	}
	return r.f.Close()
}
