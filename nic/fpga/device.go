package fpga

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/nic"
)

// Options configure the FPGA backend. The zero value drives real cards
// under /sys with the vendors' loaders.
type Options struct {
	// SysfsRoot is where sysfs is mounted; zero means /sys. Tests pass a
	// fake tree.
	SysfsRoot string
	// NewLoader returns the loader that programs the card at bdf. Nil picks
	// the family's: XRT (xrt-smi or xbutil) for Alveo, the kernel's DFL FME
	// for Intel cards, both on the host's real filesystem.
	NewLoader func(card Card, bdf string) (bitstream.Loader, error)
	// Trust, Insecure and Require are the image slot's admission rules
	// (bitstream.SlotOptions).
	Trust    *bitstream.KeyRing
	Insecure bool
	Require  bitstream.Requirements
	// Driver configures the register-map driver (polling backoff, handshake
	// timeout, event buffers).
	Driver nic.DriverOptions
	// Logger receives discovery, programming and fault reports; nil
	// discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.SysfsRoot == "" {
		o.SysfsRoot = DefaultSysfsRoot
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Driver.Logger == nil {
		o.Driver.Logger = o.Logger
	}
	if o.NewLoader == nil {
		o.NewLoader = defaultLoader
	}
	return o
}

// defaultLoader is the vendor's programming path for a card.
func defaultLoader(card Card, bdf string) (bitstream.Loader, error) {
	switch card.Family {
	case FamilyAlveo:
		return bitstream.NewXRTLoader(bitstream.XRTOptions{Device: bdf})
	case FamilyDFL:
		return bitstream.NewDFLLoader(bitstream.DFLOptions{})
	}
	return nil, fmt.Errorf("no loader for card family %q: %w", card.Family, ErrUnsupported)
}

// Device is one FPGA card driven through its BAR. A card that runs no
// kvloom image opens too, so that an image can be loaded; until then
// PushIndex and Submit fail with ErrNotProgrammed.
type Device struct {
	card Card
	bdf  string
	bar  *nic.Region
	slot *bitstream.Slot
	opts Options

	loadMu sync.Mutex // serialises Load

	mu      sync.Mutex
	drv     *nic.Driver // nil while the card runs no kvloom image
	progErr error       // why drv is nil
	closed  bool
}

var _ nic.Device = (*Device)(nil)

// Open opens the card at bdf (a PCI address): it checks that sysfs has the
// function, that the function is a supported card, that its BAR holds the
// register map, maps the BAR and, when the card runs a kvloom image, resets
// it and starts the driver.
func Open(ctx context.Context, bdf string, opts Options) (*Device, error) {
	opts = opts.withDefaults()
	addr, err := pciid.Normalize(bdf)
	if err != nil {
		return nil, fmt.Errorf("open fpga: %w: %w", err, nic.ErrBadSpec)
	}
	f, err := readFunction(opts.SysfsRoot, addr)
	if err != nil {
		return nil, fmt.Errorf("open fpga %s: %w", addr, err)
	}
	card, err := cardOf(f)
	if err != nil {
		return nil, fmt.Errorf("open fpga %s: %w", addr, err)
	}
	bar, err := mapBAR(f, card.BAR, true)
	if err != nil {
		return nil, fmt.Errorf("open fpga %s: %w", addr, err)
	}
	loader, err := opts.NewLoader(card, addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open fpga %s: loader: %w", addr, err), bar.Close())
	}
	d := &Device{card: card, bdf: addr, bar: bar, opts: opts,
		slot: bitstream.NewSlot(loader, bitstream.SlotOptions{Trust: opts.Trust, Insecure: opts.Insecure, Require: opts.Require, Logger: opts.Logger})}
	if err := nic.CheckIdentity(bar); err != nil {
		d.progErr = err
		opts.Logger.Warn("fpga_not_programmed", "bdf", addr, "card", card.Name, "err", err)
		return d, nil
	}
	drv, err := nic.NewDriver(ctx, bar, opts.Driver)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open fpga %s: %w", addr, err), bar.Close())
	}
	d.drv = drv
	return d, nil
}

// cardOf looks a function up in the card table.
func cardOf(f *function) (Card, error) {
	card, ok := lookup(f.vendor, f.device)
	if !ok {
		var names []string
		for _, c := range cards {
			if !c.Golden {
				names = append(names, fmt.Sprintf("%04x:%04x %s", c.Vendor, c.Device, c.Name))
			}
		}
		return Card{}, fmt.Errorf("PCI function %s is %04x:%04x (class %06x), not a supported FPGA card (supported: %s): %w",
			f.bdf, f.vendor, f.device, f.class, strings.Join(names, ", "), ErrUnsupported)
	}
	if card.Golden {
		return Card{}, fmt.Errorf("PCI function %s is an %s: flash a user shell with the vendor's tools first: %w", f.bdf, card.Name, ErrUnsupported)
	}
	return card, nil
}

// driver returns the live driver, or why there is none.
func (d *Device) driver(op string) (*nic.Driver, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return nil, fmt.Errorf("%s on fpga %s: %w", op, d.bdf, nic.ErrClosed)
	case d.drv == nil:
		return nil, fmt.Errorf("%s on fpga %s: %w (%v)", op, d.bdf, ErrNotProgrammed, d.progErr)
	}
	return d.drv, nil
}

// Card returns the card's table entry.
func (d *Device) Card() Card { return d.card }

// Region returns the mapped BAR.
func (d *Device) Region() *nic.Region { return d.bar }

// Slot returns the card's image slot, for status reports.
func (d *Device) Slot() *bitstream.Slot { return d.slot }

// Info describes the card and, when it runs a kvloom image, what its
// registers say.
func (d *Device) Info() nic.Info {
	var info nic.Info
	if drv, err := d.driver("info"); err == nil {
		g := drv.Geometry()
		info = g.Info()
		info.Image = d.imageName(g)
	}
	info.Kind = nic.KindFPGA
	info.Name = d.card.Name
	info.Address = d.bdf
	return info
}

// imageName is the live image's name when the slot loaded what the
// registers report, and the registers' label otherwise.
func (d *Device) imageName(g nic.Geometry) string {
	if live := d.slot.Live(); live != nil {
		ref := live.Ref()
		if strings.HasPrefix(ref.ID, fmt.Sprintf("%x", g.ImageID[:])) {
			return ref.Name + "@" + ref.Version
		}
	}
	return imageLabel(g)
}

// PushIndex applies an index update through the table window.
func (d *Device) PushIndex(ctx context.Context, upd nic.IndexUpdate) error {
	drv, err := d.driver("push index")
	if err != nil {
		return err
	}
	return drv.PushIndex(ctx, upd)
}

// Submit posts a request on the request ring.
func (d *Device) Submit(ctx context.Context, req nic.Request) (<-chan nic.Event, error) {
	drv, err := d.driver("submit")
	if err != nil {
		return nil, err
	}
	return drv.Submit(ctx, req)
}

// Stats returns the driver's counters; zero while the card is not
// programmed.
func (d *Device) Stats() nic.Stats {
	drv, err := d.driver("stats")
	if err != nil {
		return nic.Stats{}
	}
	return drv.Stats()
}

// Load programs the card with img through its loader (trust, compatibility,
// atomic switch with restore on failure), then resets the driver onto what
// is live. Requests in flight fail; the table is pushed back.
func (d *Device) Load(ctx context.Context, img *bitstream.Image) error {
	if img == nil {
		return errors.New("load image: nil image")
	}
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	d.mu.Lock()
	drv, closed := d.drv, d.closed
	d.mu.Unlock()
	if closed {
		return fmt.Errorf("load image %s on fpga %s: %w", img, d.bdf, nic.ErrClosed)
	}
	if drv != nil {
		if err := drv.Suspend(ctx); err != nil {
			return fmt.Errorf("load image %s on fpga %s: %w", img, d.bdf, err)
		}
	}
	loadErr := d.slot.Load(ctx, img)
	if errors.Is(loadErr, bitstream.ErrIncompatible) {
		loadErr = fmt.Errorf("%w: %w", nic.ErrIncompatibleImage, loadErr)
	}
	// Whatever is live now — the new image, the restored one, or the
	// unchanged one — the driver starts over on it.
	var startErr error
	if drv != nil {
		startErr = drv.Reset(context.WithoutCancel(ctx))
		if startErr != nil {
			_ = drv.Close()
			d.mu.Lock()
			d.drv, d.progErr = nil, startErr
			d.mu.Unlock()
		}
	} else if loadErr == nil {
		if err := nic.CheckIdentity(d.bar); err != nil {
			startErr = fmt.Errorf("the card reports no kvloom register map after the load: %w", err)
		} else if drv, err = nic.NewDriver(ctx, d.bar, d.opts.Driver); err != nil {
			startErr = err
		} else {
			d.mu.Lock()
			d.drv, d.progErr = drv, nil
			d.mu.Unlock()
		}
	}
	if loadErr != nil {
		if startErr != nil {
			return fmt.Errorf("load image on fpga %s: %w; the card is unusable: %w", d.bdf, loadErr, startErr)
		}
		return fmt.Errorf("load image on fpga %s: %w", d.bdf, loadErr)
	}
	if startErr != nil {
		return fmt.Errorf("load image %s on fpga %s: %w", img, d.bdf, startErr)
	}
	d.opts.Logger.Info("fpga_image_live", "bdf", d.bdf, "image", img.Ref().String())
	return nil
}

// Close stops the driver and unmaps the BAR. The card keeps its image and
// table.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	drv := d.drv
	d.mu.Unlock()
	var errs []error
	if drv != nil {
		errs = append(errs, drv.Close())
	}
	d.loadMu.Lock()
	errs = append(errs, d.bar.Close())
	d.loadMu.Unlock()
	return errors.Join(errs...)
}

// Discover lists the supported cards under a sysfs root without changing
// them: it maps each card's BAR read-only to read its identification and
// table occupancy.
func Discover(sysfsRoot string) ([]nic.Found, error) {
	if sysfsRoot == "" {
		sysfsRoot = DefaultSysfsRoot
	}
	bdfs, err := listFunctions(sysfsRoot)
	if err != nil {
		return nil, err
	}
	var found []nic.Found
	var errs []error
	for _, bdf := range bdfs {
		f, err := readFunction(sysfsRoot, bdf)
		if err != nil {
			if errors.Is(err, nic.ErrNotSupported) {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		card, ok := lookup(f.vendor, f.device)
		if !ok {
			continue
		}
		fd := nic.Found{Kind: nic.KindFPGA, Address: bdf, Name: card.Name, TableEntries: -1, TableCapacity: -1}
		if _, err := cardOf(f); err != nil {
			fd.Problem = err.Error()
		} else {
			probe(f, card, &fd)
		}
		fd.Auto = fd.Problem == ""
		found = append(found, fd)
	}
	return found, errors.Join(errs...)
}

// probe reads a card's registers through a read-only mapping.
func probe(f *function, card Card, fd *nic.Found) {
	bar, err := mapBAR(f, card.BAR, false)
	if err != nil {
		fd.Problem = err.Error()
		return
	}
	defer bar.Close()
	g, err := nic.ReadGeometry(bar)
	if err != nil {
		fd.Problem = fmt.Sprintf("%v (%v)", ErrNotProgrammed, err)
		return
	}
	fd.Image = imageLabel(g)
	fd.TableEntries = int(bar.Load32(nic.RegTblOccupancy))
	fd.TableCapacity = int(g.TableCapacity)
	fd.Simulated = g.Features&nic.FeaturesSimulated != 0
}

// Backend registers FPGA cards with a nic.Registry.
type Backend struct {
	opts Options
}

var _ nic.Backend = (*Backend)(nil)

// NewBackend returns the FPGA backend.
func NewBackend(opts Options) *Backend { return &Backend{opts: opts.withDefaults()} }

// Kind returns nic.KindFPGA.
func (b *Backend) Kind() nic.Kind { return nic.KindFPGA }

// Discover lists the cards under the backend's sysfs root.
func (b *Backend) Discover(ctx context.Context) ([]nic.Found, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return Discover(b.opts.SysfsRoot)
}

// Open opens the card at address, or the first usable card when address
// is empty.
func (b *Backend) Open(ctx context.Context, address string) (nic.Device, error) {
	if address == "" {
		found, err := Discover(b.opts.SysfsRoot)
		for _, f := range found {
			if f.Problem == "" {
				address = f.Address
				break
			}
		}
		if address == "" {
			return nil, fmt.Errorf("open fpga: no usable card under %s: %w", filepath.Join(b.opts.SysfsRoot, "bus/pci/devices"), errors.Join(nic.ErrNoDevice, err))
		}
	}
	return Open(ctx, address, b.opts)
}
