package simnic

import (
	"context"
	"fmt"

	"github.com/kvloom/kvloom/nic"
)

// Backend registers the simulator with a nic.Registry: one device, always
// present, address "simnic".
type Backend struct {
	opts Options
}

var _ nic.Backend = (*Backend)(nil)

// NewBackend returns the simulator backend; every Open powers on a fresh
// simulated device with opts.
func NewBackend(opts Options) (*Backend, error) {
	if _, err := newConfig(opts, barSize(opts)); err != nil {
		return nil, fmt.Errorf("new simulator backend: %w", err)
	}
	return &Backend{opts: opts}, nil
}

func barSize(opts Options) int {
	if opts.BARSize == 0 {
		return DefaultBARSize
	}
	return opts.BARSize
}

// Kind returns nic.KindSim.
func (b *Backend) Kind() nic.Kind { return nic.KindSim }

// Discover reports the simulator as a device that "auto" may pick, with an
// empty table: each Open starts a fresh one.
func (b *Backend) Discover(context.Context) ([]nic.Found, error) {
	cfg, err := newConfig(b.opts, barSize(b.opts))
	if err != nil {
		return nil, err
	}
	return []nic.Found{{
		Kind:          nic.KindSim,
		Address:       Address,
		Name:          Name,
		Image:         imageName(cfg.image),
		TableEntries:  0,
		TableCapacity: cfg.pipe.TableEntries,
		Simulated:     true,
		Auto:          true,
	}}, nil
}

// Open powers on a simulated device; address must be "" or "simnic".
func (b *Backend) Open(ctx context.Context, address string) (nic.Device, error) {
	if address != "" && address != Address {
		return nil, fmt.Errorf("open simulator %q: the simulator's address is %q: %w", address, Address, nic.ErrNoDevice)
	}
	return New(ctx, b.opts)
}
