//go:build !linux

package xdp

import (
	"context"
	"fmt"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// Device is the XDP backend; XDP exists only on Linux.
type Device struct{}

var _ nic.Device = (*Device)(nil)

func errNotSupported(op string) error {
	return fmt.Errorf("xdp %s: XDP needs Linux: %w", op, nic.ErrNotSupported)
}

// Open returns nic.ErrNotSupported off Linux.
func Open(ctx context.Context, opts Options) (*Device, error) { return nil, errNotSupported("open") }

// CheckKernel returns nic.ErrNotSupported off Linux.
func CheckKernel() error { return errNotSupported("check kernel") }

// Object returns nil off Linux: the object is built for the Linux kernel.
func Object() []byte { return nil }

// Info describes nothing off Linux.
func (d *Device) Info() nic.Info { return nic.Info{Kind: nic.KindXDP} }

// Load returns nic.ErrNotSupported off Linux.
func (d *Device) Load(ctx context.Context, img *bitstream.Image) error {
	return errNotSupported("load")
}

// PushIndex returns nic.ErrNotSupported off Linux.
func (d *Device) PushIndex(ctx context.Context, upd nic.IndexUpdate) error {
	return errNotSupported("push index")
}

// Submit returns nic.ErrNotSupported off Linux.
func (d *Device) Submit(ctx context.Context, req nic.Request) (<-chan nic.Event, error) {
	return nil, errNotSupported("submit")
}

// Stats returns zero off Linux.
func (d *Device) Stats() nic.Stats { return nic.Stats{} }

// Chunks returns nil off Linux.
func (d *Device) Chunks(saltID, fingerprint uint64) []matcher.ChunkKey { return nil }

// Close does nothing off Linux.
func (d *Device) Close() error { return nil }

// Backend is the XDP backend; XDP exists only on Linux.
type Backend struct{}

var _ nic.Backend = (*Backend)(nil)

// NewBackend returns a backend that finds nothing off Linux.
func NewBackend(opts Options) (*Backend, error) { return &Backend{}, nil }

// Kind returns nic.KindXDP.
func (b *Backend) Kind() nic.Kind { return nic.KindXDP }

// Discover finds nothing off Linux.
func (b *Backend) Discover(context.Context) ([]nic.Found, error) { return nil, nil }

// Open returns nic.ErrNotSupported off Linux.
func (b *Backend) Open(ctx context.Context, address string) (nic.Device, error) {
	return nil, errNotSupported("open")
}
