package gpu

import (
	"errors"
	"fmt"
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
	// ErrMalformed: a sysfs file or bus id did not have the documented format.
	ErrMalformed = errors.New("malformed input")
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

// ParseError says which input was malformed, where, and why. It Is ErrMalformed.
type ParseError struct {
	What   string // what was being parsed, e.g. "link speed", "resource line 3"
	Offset int    // byte offset into the input where the problem is, -1 if not applicable
	Value  string // the offending text (truncated)
	Reason string
}

func (e *ParseError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	if e.Offset >= 0 {
		return fmt.Sprintf("parse %s at offset %d (%q): %s", e.What, e.Offset, v, e.Reason)
	}
	return fmt.Sprintf("parse %s (%q): %s", e.What, v, e.Reason)
}

// Is reports ErrMalformed.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

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
