package bitstream

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// XDPTarget is where the xdp loader hands a loaded collection: the XDP
// backend (nic/xdp), which attaches the program to its interface.
type XDPTarget interface {
	// SwapXDP makes the named program of coll the live XDP program. On
	// success the target owns coll, and closes the collection it replaced
	// once the new program is live. On error the previous program must stay
	// live; the loader closes coll.
	SwapXDP(ctx context.Context, coll *ebpf.Collection, program string) error
}

// XDPOptions configure an XDPLoader.
type XDPOptions struct {
	// Target receives the loaded collection. Required.
	Target XDPTarget
	// Program is the XDP program to make live; zero means the object's only
	// XDP program (an object with several needs a name).
	Program string
	// Driver is the network driver of the target interface, checked against
	// the manifest's target.driver when both are set (for offload images,
	// which run only on one NIC family).
	Driver string
	// Collection is passed to ebpf.NewCollectionWithOptions (map pinning,
	// verifier log size); the zero value is cilium/ebpf's default.
	Collection ebpf.CollectionOptions
}

// XDPLoader loads xdp images into the kernel with cilium/ebpf: the kernel's
// verifier checks every program before the target is touched. It needs no
// root path: the kernel is real in tests too.
type XDPLoader struct {
	opts XDPOptions
}

var _ Loader = (*XDPLoader)(nil)

// NewXDPLoader returns a loader for xdp images.
func NewXDPLoader(opts XDPOptions) (*XDPLoader, error) {
	if opts.Target == nil {
		return nil, errors.New("new xdp loader: Target is required")
	}
	return &XDPLoader{opts: opts}, nil
}

// Name returns "xdp".
func (l *XDPLoader) Name() string { return "xdp" }

// spec reads and checks the image's object and picks the program.
func (l *XDPLoader) spec(img *Image) (*ebpf.CollectionSpec, string, error) {
	m := img.manifest
	if err := checkIdentity(m, identity{Kind: KindXDP, Driver: l.opts.Driver}); err != nil {
		return nil, "", err
	}
	sec, ok := img.Section(PayloadEBPF)
	if !ok {
		return nil, "", &IncompatibleError{Field: "payload", Image: "no ebpf-elf section", Target: "an ebpf-elf section"}
	}
	spec, err := loadEBPFSpec(sec.Data)
	if err != nil {
		return nil, "", err
	}
	progs := xdpPrograms(spec)
	switch {
	case l.opts.Program != "":
		if !slices.Contains(progs, l.opts.Program) {
			return nil, "", &IncompatibleError{Field: "program", Image: fmt.Sprint(progs), Target: l.opts.Program, Reason: "no XDP program of that name in the object"}
		}
		return spec, l.opts.Program, nil
	case len(progs) == 1:
		return spec, progs[0], nil
	case len(progs) == 0:
		return nil, "", &IncompatibleError{Field: "program", Image: "no XDP program", Target: "one XDP program"}
	default:
		return nil, "", &IncompatibleError{Field: "program", Image: fmt.Sprint(progs), Target: "one XDP program", Reason: "set XDPOptions.Program"}
	}
}

// Check verifies kind, driver and that the object holds the XDP program.
func (l *XDPLoader) Check(_ context.Context, img *Image) error {
	if _, _, err := l.spec(img); err != nil {
		return fmt.Errorf("check image %s for xdp: %w", img, err)
	}
	return nil
}

// Load loads the collection into the kernel (maps created, programs
// verified) and hands it to the target, which swaps it in. A program the
// verifier rejects never reaches the target.
func (l *XDPLoader) Load(ctx context.Context, img *Image) error {
	spec, prog, err := l.spec(img)
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, l.opts.Collection)
	if err != nil {
		// A rejected program's error is an *ebpf.VerifierError; format it
		// with %+v for the whole verifier log.
		return fmt.Errorf("load image %s into the kernel: %w: %w: %w", img, err, ErrLoadFailed, ErrTargetUnchanged)
	}
	if err := l.opts.Target.SwapXDP(ctx, coll, prog); err != nil {
		coll.Close()
		return fmt.Errorf("attach image %s program %s: %w: %w", img, prog, err, ErrTargetUnchanged)
	}
	return nil
}
