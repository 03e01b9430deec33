package simnic

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/nic"
)

// Device is the simulator as a nic.Device: a Model on plain memory, driven
// by nic.Driver through the register map exactly as a card is. Doorbells
// reach the model at once (the driver's Kick) and completions wake the
// driver at once (the model's notify), so no time is spent polling.
type Device struct {
	*nic.Driver
	model *Model
	slot  *bitstream.Slot

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

var _ nic.Device = (*Device)(nil)

// Name is the simulator's model name in Info and discovery.
const Name = "kvloom simnic"

// Address is the simulator's address in a device spec ("sim:simnic").
const Address = "simnic"

// New powers on a simulated device with opts' configuration and opens the
// driver on it. Close stops it.
func New(ctx context.Context, opts Options) (*Device, error) {
	size := opts.BARSize
	if size == 0 {
		size = DefaultBARSize
	}
	if size < nic.MinBARSize || size%8 != 0 {
		return nil, fmt.Errorf("new simulated device: BAR size %d, want a multiple of 8 of at least %d: %w", size, nic.MinBARSize, ErrConfig)
	}
	bar, err := nic.NewRegion(make([]byte, size))
	if err != nil {
		return nil, fmt.Errorf("new simulated device: %w", err)
	}
	model, err := NewModel(bar, opts)
	if err != nil {
		return nil, err
	}
	loader, err := bitstream.NewSimLoader(bitstream.SimOptions{Target: model})
	if err != nil {
		return nil, fmt.Errorf("new simulated device: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &Device{
		model:  model,
		slot:   bitstream.NewSlot(loader, bitstream.SlotOptions{Trust: opts.Trust, Insecure: opts.Insecure, Require: opts.Require, Logger: opts.Logger}),
		cancel: cancel,
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		_ = model.Serve(sctx) // returns nil when sctx ends
	}()
	dopts := opts.Driver
	dopts.Kick = model.Kick
	if dopts.Logger == nil {
		dopts.Logger = opts.Logger
	}
	drv, err := nic.NewDriver(ctx, bar, dopts)
	if err != nil {
		cancel()
		d.wg.Wait()
		return nil, fmt.Errorf("new simulated device: %w", err)
	}
	model.SetNotify(drv.Wake)
	d.Driver = drv
	return d, nil
}

// Model returns the register model behind the device, for tests that poke
// the BAR directly.
func (d *Device) Model() *Model { return d.model }

// Info describes the device as its registers do.
func (d *Device) Info() nic.Info {
	info := d.Geometry().Info()
	info.Kind = nic.KindSim
	info.Name = Name
	info.Address = Address
	info.Image = imageName(d.model.Image())
	return info
}

// imageName is how an image shows in Info and discovery.
func imageName(ref bitstream.ImageRef) string {
	if ref.Name == "" {
		return "built-in defaults"
	}
	return ref.Name + "@" + ref.Version
}

// Load configures the simulator from a sim image through bitstream's sim
// loader (trust, compatibility, atomic switch), then resets the driver onto
// the new geometry and pushes its table back. Requests in flight fail, also
// when the image is refused.
func (d *Device) Load(ctx context.Context, img *bitstream.Image) error {
	if img == nil {
		return errors.New("load image: nil image")
	}
	// Programming clears the device: the driver lets go of it first (and
	// keeps its counters), then starts over on whatever is live.
	if err := d.Driver.Suspend(ctx); err != nil {
		return fmt.Errorf("load image %s: %w", img, err)
	}
	loadErr := d.slot.Load(ctx, img)
	if errors.Is(loadErr, bitstream.ErrIncompatible) {
		loadErr = fmt.Errorf("%w: %w", nic.ErrIncompatibleImage, loadErr)
	}
	if err := d.Driver.Reset(context.WithoutCancel(ctx)); err != nil {
		return errors.Join(loadErr, fmt.Errorf("load image %s: reset after load: %w", img, err))
	}
	return loadErr
}

// Slot returns the image slot, for status reports.
func (d *Device) Slot() *bitstream.Slot { return d.slot }

// Close stops the driver and the simulator.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	err := d.Driver.Close()
	d.cancel()
	d.wg.Wait()
	return err
}
