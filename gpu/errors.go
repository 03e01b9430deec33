package gpu

import (
	"errors"
	"fmt"

	"github.com/kvloom/kvloom/internal/pciid"
)

// Sentinel errors callers branch on.
var (
	// ErrNoNVML: the NVML library (libnvidia-ml.so.1) is absent or would not
	// initialise; GPU facts come from sysfs alone.
	ErrNoNVML = errors.New("NVML not available")
	// ErrNoCUDA: the CUDA driver library (libcuda.so.1) is absent, lacks a
	// symbol the DMA backend needs, or has no usable device; use the sim
	// backend instead.
	ErrNoCUDA = errors.New("CUDA driver not available")
	// ErrNotFound: no device with the given address or name.
	ErrNotFound = errors.New("device not found")
	// ErrMalformed: a sysfs file or bus id did not have the documented
	// format. It is pciid.ErrMalformed, which bus ids are parsed against.
	ErrMalformed = pciid.ErrMalformed
	// ErrClosed: the DMA engine or pool was closed.
	ErrClosed = errors.New("closed")
	// ErrBadRequest: a DMA request does not fit its buffer (layer out of
	// range, source larger than a layer), a host buffer larger than the
	// pool, or a HostBuffer that is not the caller's to hand over
	// (released, already handed to a copy, from another engine).
	ErrBadRequest = errors.New("bad DMA request")
	// ErrNotSupported: the backend cannot run on this platform.
	ErrNotSupported = errors.New("not supported on this platform")
)

// ParseError says which input was malformed, where, and why. It Is
// ErrMalformed. It is pciid's, so that a bad bus id (parsed there) and a bad
// sysfs file fail alike.
type ParseError = pciid.ParseError

// CUDAError is a failed CUDA driver call. It carries the call and the
// CUresult code and name.
type CUDAError struct {
	Call string
	Code int32
	Name string
}

func (e *CUDAError) Error() string {
	return fmt.Sprintf("%s: CUDA error %d (%s)", e.Call, e.Code, e.Name)
}
