//go:build linux

package xdp

import (
	"context"
	"fmt"
	"net"

	"github.com/kvloom/kvloom/nic"
)

// Backend registers the XDP backend with a nic.Registry: "xdp:IFACE" opens
// a Device attached to IFACE. It is never picked by "auto": attaching a
// program to an interface changes what happens to its traffic, so the
// operator names the interface.
type Backend struct {
	opts Options
}

var _ nic.Backend = (*Backend)(nil)

// NewBackend returns the XDP backend; every Open uses opts with Interface
// set to the address it is given.
func NewBackend(opts Options) (*Backend, error) {
	o := opts
	o.Interface = "x" // validated with some interface; each Open names its own
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("new xdp backend: %w", err)
	}
	return &Backend{opts: opts}, nil
}

// Kind returns nic.KindXDP.
func (b *Backend) Kind() nic.Kind { return nic.KindXDP }

// Discover lists the network interfaces (in Options.Netns, or the caller's
// namespace) a program could be attached to. It does not look at what they
// run: the table of an attached program belongs to the daemon that attached
// it, so occupancy is unknown (-1).
func (b *Backend) Discover(context.Context) ([]nic.Found, error) {
	var ifs []net.Interface
	err := inNetns(b.opts.Netns, func() error {
		var err error
		ifs, err = net.Interfaces()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("discover xdp interfaces: %w", err)
	}
	var out []nic.Found
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		f := nic.Found{Kind: nic.KindXDP, Address: ifi.Name, Name: Name, TableEntries: -1, TableCapacity: -1}
		if ifi.Flags&net.FlagUp == 0 {
			f.Problem = "interface is down"
		}
		out = append(out, f)
	}
	return out, nil
}

// Open attaches a Device to the interface named address.
func (b *Backend) Open(ctx context.Context, address string) (nic.Device, error) {
	if address == "" {
		return nil, fmt.Errorf("open xdp device: name the interface (xdp:IFACE): %w", nic.ErrNoDevice)
	}
	o := b.opts
	o.Interface = address
	d, err := Open(ctx, o)
	if err != nil {
		return nil, err
	}
	return d, nil
}
