package hostctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/kvcache"
)

// SegmentLayout names the layout of a segment's bytes (docs/api.md).
const SegmentLayout = "kvloom-contiguous-v1"

// segment is one stitched KV handed to an engine: a file in shared memory
// (a tmpfs such as /dev/shm) that the daemon maps read-write and the engine
// maps read-only, and optionally a GPU buffer the DMA backend owns. A
// gpu_only segment has no file (path "", data and kv nil): its handle
// stands for the GPU buffer.
type segment struct {
	handle  string
	path    string
	data    []byte
	kv      *kvcache.KV
	expires time.Time
	buf     *gpu.Buffer
	dma     gpu.DMA
	// busy is set while Prepare writes into the segment; a Release or
	// expiry meanwhile only marks it doomed, and done deletes it.
	busy   bool
	doomed bool
}

// segments owns every live segment: a byte budget, a TTL, and deletion on
// Release, expiry or shutdown.
type segments struct {
	dir    string
	budget int64
	ttl    time.Duration
	m      *metrics

	mu    sync.Mutex
	live  map[string]*segment
	bytes int64
}

func newSegments(dir string, budget int64, ttl time.Duration, m *metrics) (*segments, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("segment directory: %w", err)
	}
	return &segments{dir: dir, budget: budget, ttl: ttl, m: m, live: map[string]*segment{}}, nil
}

// create makes a zeroed segment for tokens positions of shape, with its
// shared-memory file unless host is false (gpu_only: the GPU buffer the
// caller attaches holds the KV).
func (s *segments) create(shape kvcache.Shape, tokens int, host bool) (*segment, error) {
	size := int64(shape.Bytes(tokens))
	if !host {
		size = 0
	}
	s.mu.Lock()
	if s.bytes+size > s.budget {
		used := s.bytes
		s.mu.Unlock()
		return nil, fmt.Errorf("segment of %d bytes: %d of %d bytes in use (limits.segment_bytes): %w", size, used, s.budget, ErrOverloaded)
	}
	s.bytes += size
	s.mu.Unlock()
	var seg *segment
	var err error
	if host {
		seg, err = s.open(shape, tokens, size)
	} else {
		seg, err = newHandle()
	}
	if err != nil {
		s.mu.Lock()
		s.bytes -= size
		s.mu.Unlock()
		return nil, err
	}
	seg.busy = true
	s.mu.Lock()
	s.live[seg.handle] = seg
	s.report()
	s.mu.Unlock()
	return seg, nil
}

// done ends Prepare's use of seg: its TTL starts now, or it is deleted if
// it was released meanwhile (or drop is set: the Prepare failed).
func (s *segments) done(seg *segment, drop bool) {
	s.mu.Lock()
	seg.busy = false
	seg.expires = time.Now().Add(s.ttl)
	del := seg.doomed || drop
	if del {
		if _, ok := s.live[seg.handle]; ok {
			delete(s.live, seg.handle)
			s.bytes -= int64(len(seg.data))
			s.report()
		}
	}
	s.mu.Unlock()
	if del {
		_ = seg.close()
	}
}

// newHandle makes a segment with a fresh random handle and nothing else.
func newHandle() (*segment, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("segment id: %w", err)
	}
	return &segment{handle: hex.EncodeToString(id[:])}, nil
}

func (s *segments) open(shape kvcache.Shape, tokens int, size int64) (*segment, error) {
	h, err := newHandle()
	if err != nil {
		return nil, err
	}
	handle := h.handle
	path := filepath.Join(s.dir, "kvloom-"+handle+".kv")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	defer f.Close()
	// Allocate the pages now: a tmpfs that is full fails here with ENOSPC,
	// not later with SIGBUS when the stitcher writes.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("allocate segment of %d bytes in %s: %w", size, s.dir, err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("map segment: %w", err)
	}
	kv, err := kvcache.WrapKV(shape, tokens, data)
	if err != nil {
		unix.Munmap(data)
		os.Remove(path)
		return nil, fmt.Errorf("segment layout: %w", err)
	}
	return &segment{handle: handle, path: path, data: data, kv: kv, expires: time.Now().Add(s.ttl)}, nil
}

// release deletes a segment by handle.
func (s *segments) release(handle string) error {
	s.mu.Lock()
	seg, ok := s.live[handle]
	if ok && seg.busy {
		seg.doomed = true
		s.mu.Unlock()
		return nil
	}
	if ok {
		delete(s.live, handle)
		s.bytes -= int64(len(seg.data))
		s.report()
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("segment %q: %w", handle, ErrNotFound)
	}
	return seg.close()
}

func (seg *segment) close() error {
	var errs []error
	if seg.buf != nil && seg.dma != nil {
		if err := seg.dma.Free(seg.buf); err != nil && !errors.Is(err, gpu.ErrClosed) {
			errs = append(errs, fmt.Errorf("free gpu buffer: %w", err))
		}
	}
	if seg.data != nil {
		if err := unix.Munmap(seg.data); err != nil {
			errs = append(errs, fmt.Errorf("unmap segment: %w", err))
		}
	}
	if seg.path != "" {
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove segment: %w", err))
		}
	}
	return errors.Join(errs...)
}

// expire deletes segments whose TTL passed.
func (s *segments) expire(now time.Time) int {
	var old []*segment
	s.mu.Lock()
	for h, seg := range s.live {
		if !seg.busy && now.After(seg.expires) {
			old = append(old, seg)
			delete(s.live, h)
			s.bytes -= int64(len(seg.data))
		}
	}
	s.report()
	s.mu.Unlock()
	for _, seg := range old {
		_ = seg.close()
	}
	s.m.segmentExpired.Add(float64(len(old)))
	return len(old)
}

// run expires segments until ctx ends.
func (s *segments) run(ctx context.Context) error {
	t := time.NewTicker(max(s.ttl/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.expire(now)
		}
	}
}

// closeAll deletes every segment (shutdown).
func (s *segments) closeAll() error {
	s.mu.Lock()
	all := s.live
	s.live = map[string]*segment{}
	s.bytes = 0
	s.report()
	s.mu.Unlock()
	var errs []error
	for _, seg := range all {
		errs = append(errs, seg.close())
	}
	return errors.Join(errs...)
}

// stats returns the live count and bytes.
func (s *segments) stats() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live), s.bytes
}

// report updates the gauges; s.mu is held.
func (s *segments) report() {
	s.m.segmentsActive.Set(float64(len(s.live)))
	s.m.segmentBytes.Set(float64(s.bytes))
}
