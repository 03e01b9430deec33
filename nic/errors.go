package nic

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kvloom/kvloom/matcher"
)

// Sentinel errors callers branch on. Returned errors wrap them with detail.
var (
	// ErrTableFull: the device's index table cannot take more entries. The
	// error is a *TableFullError naming what was rejected and evicted.
	ErrTableFull = errors.New("device index table full")
	// ErrQueueFull: a request ring or the card's buffer memory is full;
	// retry later (backpressure, never unbounded queueing).
	ErrQueueFull = errors.New("device queue full")
	// ErrNoDevice: no device matches the requested spec.
	ErrNoDevice = errors.New("no such device")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("device closed")
	// ErrIncompatibleImage: an image's manifest does not fit the device.
	ErrIncompatibleImage = errors.New("incompatible image")
	// ErrNotSupported: the backend cannot run on this platform.
	ErrNotSupported = errors.New("not supported on this platform")
	// ErrBadRequest: a request or index entry the device cannot take (empty
	// or oversized prompt, oversized entry, NaN rank, a key that is not the
	// chunk key of its tokens). Nothing was sent to the device.
	ErrBadRequest = errors.New("bad request")
	// ErrBadSpec: a --device spec that does not parse.
	ErrBadSpec = errors.New("bad device spec")
	// ErrDeviceFault: the device reported an error or broke the register
	// protocol. The error is a *DeviceError; on a fatal one the driver has
	// reset the device.
	ErrDeviceFault = errors.New("device fault")
	// ErrTimeout: the device did not answer a handshake (reset, table
	// batch) within the driver's timeout.
	ErrTimeout = errors.New("device did not respond")
)

// TableFullError reports an index update that did not fit: Rejected entries
// were not stored, Evicted ones were removed to make room for higher-ranked
// entries. Everything else in the update was applied. It Is ErrTableFull.
type TableFullError struct {
	Capacity int
	Rejected []matcher.ChunkKey
	Evicted  []matcher.ChunkKey
}

func (e *TableFullError) Error() string {
	return fmt.Sprintf("push index: table of %d entries full: %d rejected, %d evicted", e.Capacity, len(e.Rejected), len(e.Evicted))
}

// Is reports whether target is ErrTableFull.
func (e *TableFullError) Is(target error) bool { return target == ErrTableFull }

// DeviceError is an error the device reported through its error registers
// or a completion, or a protocol violation the driver saw. It Is
// ErrDeviceFault; a per-request code (a descriptor the device refused) also
// Is ErrBadRequest.
type DeviceError struct {
	Op    string // what the driver was doing: "submit", "push index", "reset"
	Code  Code   // the ERR code, CodeNone for a driver-detected violation
	Info  uint32 // where: ring slot or record index
	Value uint32 // the offending value
	Fatal bool   // the device halted (or broke protocol) and was reset
	// Detail describes a driver-detected violation.
	Detail string
}

func (e *DeviceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: device error %s", e.Op, e.Code)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	fmt.Fprintf(&b, " (info %d, value %#x)", e.Info, e.Value)
	if e.Fatal {
		b.WriteString("; device was reset")
	}
	return b.String()
}

// Is reports whether target is ErrDeviceFault, ErrBadRequest for a refused
// descriptor or record, or the matcher sentinel a code stands for
// (matcher.ErrTooManyCandidates, matcher.ErrZeroSalt), so that callers
// branch the same way on the device's answer and the software matcher's.
func (e *DeviceError) Is(target error) bool {
	switch target {
	case ErrDeviceFault:
		return true
	case ErrBadRequest:
		return !e.Fatal && e.Code != CodeNone && e.Code != CodeTooManyCandidates
	case matcher.ErrTooManyCandidates:
		return e.Code == CodeTooManyCandidates
	case matcher.ErrZeroSalt:
		return e.Code == CodeZeroSalt
	}
	return false
}
