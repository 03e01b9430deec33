//go:build !linux

package wire

import "context"

// Capture is only implemented on Linux.
type Capture struct{}

// OpenCapture returns ErrNotSupported off Linux.
func OpenCapture(ifname string) (*Capture, error) { return nil, ErrNotSupported }

// Run returns ErrNotSupported off Linux.
func (c *Capture) Run(ctx context.Context, rec *Recorder, keep func(frame []byte) bool) (int, error) {
	return 0, ErrNotSupported
}

// Close does nothing off Linux.
func (c *Capture) Close() error { return nil }
