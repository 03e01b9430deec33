package nic

import "errors"

// Sentinel errors callers branch on.
var (
	// ErrTableFull: the device's index table cannot take more entries.
	ErrTableFull = errors.New("device index table full")
	// ErrQueueFull: a request or completion ring is full; retry later.
	ErrQueueFull = errors.New("device queue full")
	// ErrNoDevice: no device matches the requested spec.
	ErrNoDevice = errors.New("no such device")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("device closed")
	// ErrIncompatibleImage: an image's manifest does not fit the device.
	ErrIncompatibleImage = errors.New("incompatible image")
	// ErrNotSupported: the backend cannot run on this platform.
	ErrNotSupported = errors.New("not supported on this platform")
)
