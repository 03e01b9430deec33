package nic

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Region is a window of device memory as the CPU sees it: a BAR mapped from
// sysfs resourceN, a file the simulator serves, or plain memory. Register
// accesses are single aligned atomic loads and stores, which is what makes
// one side's writes visible to the other in order (the same guarantee
// posted PCIe writes give): write the payload, then the register that
// publishes it.
//
// Offsets are bytes from the start of the region. Accessors panic on an
// offset outside the region or misaligned for the access width, as a slice
// index would: callers validate device-supplied offsets before using them.
type Region struct {
	mem      []byte
	writable bool
	unmap    func() error
}

// NewRegion wraps memory as a writable region. mem must be 8-byte aligned
// (any slice from make is) and its length a multiple of 8.
func NewRegion(mem []byte) (*Region, error) {
	if len(mem) == 0 || len(mem)%8 != 0 {
		return nil, fmt.Errorf("new region: length %d is not a positive multiple of 8", len(mem))
	}
	if uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("new region: memory at %p is not 8-byte aligned", &mem[0])
	}
	return &Region{mem: mem, writable: true}, nil
}

// Size returns the region's length in bytes.
func (r *Region) Size() int { return len(r.mem) }

// Writable reports whether stores are allowed (a read-only BAR probe is not).
func (r *Region) Writable() bool { return r.writable }

func (r *Region) check(off, n int) {
	if off < 0 || off > len(r.mem)-n || off%n != 0 {
		panic(fmt.Sprintf("nic: %d-byte access at offset %#x of a %#x-byte region", n, off, len(r.mem)))
	}
}

func (r *Region) mustWrite(off int) {
	if !r.writable {
		panic(fmt.Sprintf("nic: store at offset %#x of a read-only region", off))
	}
}

// Load32 reads the 32-bit little-endian register at off.
func (r *Region) Load32(off int) uint32 {
	r.check(off, 4)
	return fromLE32(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.mem[off]))))
}

// Store32 writes the 32-bit little-endian register at off.
func (r *Region) Store32(off int, v uint32) {
	r.check(off, 4)
	r.mustWrite(off)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.mem[off])), toLE32(v))
}

// Load64 reads the 64-bit little-endian register at off in one access.
func (r *Region) Load64(off int) uint64 {
	r.check(off, 8)
	return fromLE64(atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.mem[off]))))
}

// Store64 writes the 64-bit little-endian register at off in one access.
func (r *Region) Store64(off int, v uint64) {
	r.check(off, 8)
	r.mustWrite(off)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&r.mem[off])), toLE64(v))
}

func (r *Region) span(off, n int) []byte {
	if off < 0 || n < 0 || off > len(r.mem)-n {
		panic(fmt.Sprintf("nic: %d-byte copy at offset %#x of a %#x-byte region", n, off, len(r.mem)))
	}
	return r.mem[off : off+n : off+n]
}

// Read copies len(dst) bytes of device memory at off into dst. It is not
// atomic: read the register that publishes the bytes first.
func (r *Region) Read(off int, dst []byte) { copy(dst, r.span(off, len(dst))) }

// Write copies src into device memory at off. It is not atomic: write the
// register that publishes the bytes after it.
func (r *Region) Write(off int, src []byte) {
	b := r.span(off, len(src))
	r.mustWrite(off)
	copy(b, src)
}

// Zero clears n bytes at off.
func (r *Region) Zero(off, n int) {
	b := r.span(off, n)
	r.mustWrite(off)
	clear(b)
}

// ReadTokens decodes len(dst) little-endian uint32 tokens at off into dst.
func (r *Region) ReadTokens(off int, dst []uint32) {
	b := r.span(off, 4*len(dst))
	if hostLittleEndian {
		if len(dst) > 0 {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), b)
		}
		return
	}
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
}

// Tokens returns n little-endian uint32 tokens at off as a slice that
// aliases the region's memory, without copying, or nil on a big-endian host
// (use ReadTokens there). It is how a device reads a buffer it owns: the
// slice is valid until the region is closed and must be read only while
// the protocol gives the reader the buffer.
func (r *Region) Tokens(off, n int) []uint32 {
	b := r.span(off, 4*n)
	if !hostLittleEndian || off%4 != 0 {
		return nil
	}
	if n == 0 {
		return []uint32{}
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), n)
}

// WriteTokens encodes toks as little-endian uint32 at off.
func (r *Region) WriteTokens(off int, toks []uint32) {
	b := r.span(off, 4*len(toks))
	r.mustWrite(off)
	if hostLittleEndian {
		if len(toks) > 0 {
			copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&toks[0])), 4*len(toks)))
		}
		return
	}
	for i, t := range toks {
		binary.LittleEndian.PutUint32(b[4*i:], t)
	}
}

// Close unmaps a mapped region; for plain memory it does nothing. The region
// must not be used afterwards.
func (r *Region) Close() error {
	if r.unmap == nil {
		return nil
	}
	u := r.unmap
	r.unmap = nil
	r.mem = nil
	return u()
}

// hostLittleEndian is true where native loads already are little-endian.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

func toLE32(v uint32) uint32 {
	if hostLittleEndian {
		return v
	}
	return swap32(v)
}

func fromLE32(v uint32) uint32 { return toLE32(v) }

func toLE64(v uint64) uint64 {
	if hostLittleEndian {
		return v
	}
	return uint64(swap32(uint32(v)))<<32 | uint64(swap32(uint32(v>>32)))
}

func fromLE64(v uint64) uint64 { return toLE64(v) }

func swap32(v uint32) uint32 { return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24 }
