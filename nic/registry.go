package nic

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Found is a device a backend discovered, described without opening it or
// changing its state (a daemon may be driving it).
type Found struct {
	Kind    Kind   `json:"kind"`
	Address string `json:"address"` // what follows "kind:" in a spec: a PCI BDF, an interface
	Name    string `json:"name"`    // model, e.g. "Alveo U55C"
	// Image is the loaded image as the device reports it, empty when none
	// or unknown.
	Image string `json:"image,omitempty"`
	// TableEntries and TableCapacity are the table's occupancy; -1 when the
	// probe could not read them.
	TableEntries  int  `json:"table_entries"`
	TableCapacity int  `json:"table_capacity"`
	Simulated     bool `json:"simulated,omitempty"`
	// Auto: "--device auto" may pick this device without it being named.
	Auto bool `json:"auto"`
	// Problem says why the device cannot be used as it is (no kvloom image,
	// BAR too small); empty when it can.
	Problem string `json:"problem,omitempty"`
}

// Backend opens one kind of device. Backends are registered explicitly by
// the program that wires kvloom together (hostctl, cmd/kvloom).
type Backend interface {
	Kind() Kind
	// Discover lists this kind's devices on the machine without changing
	// their state.
	Discover(ctx context.Context) ([]Found, error)
	// Open opens the device at address (Found.Address). An empty address
	// means the backend's only or first usable device.
	Open(ctx context.Context, address string) (Device, error)
}

// Spec is a parsed --device value: "auto", "sim", "fpga:0000:3b:00.0",
// "xdp:eth0". A kind without an address ("fpga") means the first usable
// device of that kind.
type Spec struct {
	Auto    bool
	Kind    Kind
	Address string
}

// String returns the spec in the form ParseSpec reads.
func (s Spec) String() string {
	switch {
	case s.Auto:
		return "auto"
	case s.Address == "":
		return string(s.Kind)
	}
	return string(s.Kind) + ":" + s.Address
}

// ParseSpec parses a --device value. Kinds are checked by the registry, so
// a backend added later needs no change here.
func ParseSpec(s string) (Spec, error) {
	if s == "auto" {
		return Spec{Auto: true}, nil
	}
	kind, addr, hasAddr := strings.Cut(s, ":")
	if kind == "" || strings.TrimFunc(kind, isKindRune) != "" {
		return Spec{}, fmt.Errorf("parse device spec %q: kind %q is not a word of [a-z0-9-] (want auto, sim, fpga:BDF or xdp:IFACE): %w", s, kind, ErrBadSpec)
	}
	if hasAddr && addr == "" {
		return Spec{}, fmt.Errorf("parse device spec %q: empty address after %q: %w", s, kind+":", ErrBadSpec)
	}
	if strings.TrimFunc(addr, isAddrRune) != "" {
		return Spec{}, fmt.Errorf("parse device spec %q: address %q has characters outside [A-Za-z0-9._:@-]: %w", s, addr, ErrBadSpec)
	}
	return Spec{Kind: Kind(kind), Address: addr}, nil
}

func isKindRune(r rune) bool { return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' }

// isAddrRune accepts what PCI addresses and interface names are made of.
func isAddrRune(r rune) bool {
	return isKindRune(r) || r >= 'A' && r <= 'Z' || r == '.' || r == '_' || r == ':' || r == '@'
}

// Registry maps specs to backends. The order of registration is the order
// of preference of "auto".
type Registry struct {
	backends []Backend
}

// NewRegistry returns a registry of backends, in order of preference.
func NewRegistry(backends ...Backend) (*Registry, error) {
	r := &Registry{}
	for _, b := range backends {
		if err := r.Register(b); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds a backend after those already registered.
func (r *Registry) Register(b Backend) error {
	if b == nil {
		return errors.New("register backend: nil backend")
	}
	for _, have := range r.backends {
		if have.Kind() == b.Kind() {
			return fmt.Errorf("register backend %s: already registered", b.Kind())
		}
	}
	r.backends = append(r.backends, b)
	return nil
}

// Kinds lists the registered kinds in order of preference.
func (r *Registry) Kinds() []Kind {
	ks := make([]Kind, len(r.backends))
	for i, b := range r.backends {
		ks[i] = b.Kind()
	}
	return ks
}

func (r *Registry) backend(k Kind) Backend {
	for _, b := range r.backends {
		if b.Kind() == k {
			return b
		}
	}
	return nil
}

// Discover lists every registered backend's devices. A backend that fails
// to discover does not hide the others: its error is joined to the result.
func (r *Registry) Discover(ctx context.Context) ([]Found, error) {
	var all []Found
	var errs []error
	for _, b := range r.backends {
		found, err := b.Discover(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("discover %s devices: %w", b.Kind(), err))
		}
		all = append(all, found...)
	}
	return all, errors.Join(errs...)
}

// Open opens the device a --device spec names. "auto" opens the first
// usable device that allows it, trying backends in order of preference; a
// kind alone opens that kind's first usable device.
func (r *Registry) Open(ctx context.Context, spec string) (Device, error) {
	s, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	if !s.Auto {
		b := r.backend(s.Kind)
		if b == nil {
			return nil, fmt.Errorf("open device %q: no %q backend (have %v): %w", spec, s.Kind, r.Kinds(), ErrNoDevice)
		}
		d, err := b.Open(ctx, s.Address)
		if err != nil {
			return nil, fmt.Errorf("open device %q: %w", spec, err)
		}
		return d, nil
	}
	var tried []string
	var errs []error
	for _, b := range r.backends {
		found, err := b.Discover(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("discover %s devices: %w", b.Kind(), err))
			continue
		}
		for _, f := range found {
			if !f.Auto || f.Problem != "" {
				continue
			}
			d, err := b.Open(ctx, f.Address)
			if err == nil {
				return d, nil
			}
			tried = append(tried, Spec{Kind: f.Kind, Address: f.Address}.String())
			errs = append(errs, fmt.Errorf("open %s:%s: %w", f.Kind, f.Address, err))
		}
	}
	return nil, fmt.Errorf("open device auto: no usable device among %v (tried %v): %w", r.Kinds(), tried, errors.Join(append([]error{ErrNoDevice}, errs...)...))
}
