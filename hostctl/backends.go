package hostctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/simnic"
	"github.com/kvloom/kvloom/nic/xdp"
)

// Registry returns the accelerator backends kvloom knows, registered
// explicitly in order of preference for "auto": FPGA cards first (real
// hardware), then the XDP program (named interfaces only), then the
// simulator. matcherOpts are the parameters the control plane indexes with,
// which the simulator and the XDP program are built to match.
func Registry(cfg DeviceConfig, matcherOpts matcher.Options, log *slog.Logger) (*nic.Registry, error) {
	trust, err := trustRing(cfg.TrustDir)
	if err != nil {
		return nil, err
	}
	// Every image loaded later must match the way the daemon indexes.
	ix, err := matcher.New(matcherOpts)
	if err != nil {
		return nil, fmt.Errorf("matcher parameters: %w", err)
	}
	ap := ix.AnchorParams()
	req := bitstream.Requirements{Matcher: bitstream.MatcherParams{
		AnchorWindow: ap.W, KGram: ap.K, MinMatch: matcherOpts.MinLen, BlockTokens: matcherOpts.BlockSize,
	}}
	// The simulator's doorbells and completions wake each side at once
	// (Kick, Wake), so the idle pollers may back off far: an idle daemon
	// then costs no CPU.
	sim, err := simnic.NewBackend(simnic.Options{
		PollMax:  50 * time.Millisecond,
		Driver:   nic.DriverOptions{PollMax: 50 * time.Millisecond, Logger: log},
		Matcher:  matcherOpts,
		Logger:   log,
		Trust:    trust,
		Insecure: cfg.InsecureImages,
		Require:  req,
	})
	if err != nil {
		return nil, fmt.Errorf("simulator backend: %w", err)
	}
	mode, err := xdp.ParseAttachMode(cfg.XDPMode)
	if err != nil {
		return nil, fmt.Errorf("device.xdp_mode: %w", err)
	}
	return nic.NewRegistry(
		fpga.NewBackend(fpga.Options{SysfsRoot: cfg.SysfsRoot, Trust: trust, Insecure: cfg.InsecureImages, Require: req, Logger: log}),
		&xdpBackend{opts: xdp.Options{Mode: mode, Matcher: matcherOpts, Trust: trust, Insecure: cfg.InsecureImages, Require: req, Logger: log}},
		sim,
	)
}

func trustRing(dir string) (*bitstream.KeyRing, error) {
	if dir == "" {
		return nil, nil
	}
	kr, err := bitstream.LoadKeyRing(dir)
	if err != nil {
		return nil, fmt.Errorf("device.trust_dir: %w", err)
	}
	return kr, nil
}

// xdpBackend adapts nic/xdp (which opens by interface name) to
// nic.Backend. It discovers nothing on its own: an XDP device is any
// interface, so it must be named ("xdp:eth0"); "auto" never picks one.
type xdpBackend struct{ opts xdp.Options }

var _ nic.Backend = (*xdpBackend)(nil)

func (b *xdpBackend) Kind() nic.Kind { return nic.KindXDP }

func (b *xdpBackend) Discover(context.Context) ([]nic.Found, error) { return nil, nil }

func (b *xdpBackend) Open(ctx context.Context, address string) (nic.Device, error) {
	if address == "" {
		return nil, fmt.Errorf("xdp needs an interface (xdp:IFACE): %w", nic.ErrNoDevice)
	}
	o := b.opts
	if address != "test-run" {
		o.Interface = address
	}
	return xdp.Open(ctx, o)
}

// device is the accelerator the daemon drives, or the reason it has none.
type device struct {
	reg      *nic.Registry
	spec     string
	required bool
	log      *slog.Logger
	m        *metrics

	mu     sync.RWMutex
	dev    nic.Device
	reason string
}

// openDevice opens cfg.Device.Backend. A device that cannot be opened is
// left out with the reason (logged once at Warn, kvloom_backend_up 0)
// unless device.required.
func openDevice(ctx context.Context, cfg *Config, backends []nic.Backend, mopts matcher.Options, log *slog.Logger, m *metrics) (*device, error) {
	d := &device{spec: cfg.Device.Backend, required: cfg.Device.Required, log: log, m: m}
	defer func() { m.reg.MustRegister(d) }()
	var err error
	if backends != nil {
		d.reg, err = nic.NewRegistry(backends...)
	} else {
		d.reg, err = Registry(cfg.Device, mopts, log)
	}
	if err != nil {
		return nil, err
	}
	if d.spec == "none" {
		d.reason = "disabled (device.backend: none)"
		m.setBackend("device", false)
		return d, nil
	}
	dev, err := d.reg.Open(ctx, d.spec)
	if err == nil {
		err = checkMatcher(dev.Info(), mopts)
		if err != nil {
			dev.Close()
		}
	}
	if err == nil && cfg.Device.Image != "" {
		err = loadImageFile(ctx, dev, cfg.Device.Image)
		if err != nil {
			dev.Close()
		}
	}
	if err != nil {
		if d.required {
			return nil, fmt.Errorf("device %s (device.required): %w: %w", d.spec, ErrBackend, err)
		}
		d.reason = err.Error()
		log.Warn("device_unavailable", "spec", d.spec, "reason", d.reason)
		m.setBackend("device", false)
		return d, nil
	}
	d.dev = dev
	m.setBackend("device", true)
	return d, nil
}

var (
	descDevTable    = prometheus.NewDesc("kvloom_device_table_entries", "Accelerator index table: entries in use (state=used) and its capacity (state=capacity).", []string{"state"}, nil)
	descDevRequests = prometheus.NewDesc("kvloom_device_requests_total", "Requests the accelerator matched.", nil, nil)
	descDevMatches  = prometheus.NewDesc("kvloom_device_matches_total", "Matches the accelerator reported.", nil, nil)
	descDevBusy     = prometheus.NewDesc("kvloom_device_backpressure_total", "Submissions the accelerator refused because its queue was full.", nil, nil)
)

// Describe implements prometheus.Collector.
func (d *device) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDevTable
	ch <- descDevRequests
	ch <- descDevMatches
	ch <- descDevBusy
}

// Collect implements prometheus.Collector: the device's own counters at
// scrape time (zero without a device).
func (d *device) Collect(ch chan<- prometheus.Metric) {
	var st nic.Stats
	if dev := d.get(); dev != nil {
		st = dev.Stats()
	}
	ch <- prometheus.MustNewConstMetric(descDevTable, prometheus.GaugeValue, float64(st.TableEntries), "used")
	ch <- prometheus.MustNewConstMetric(descDevTable, prometheus.GaugeValue, float64(st.TableCapacity), "capacity")
	ch <- prometheus.MustNewConstMetric(descDevRequests, prometheus.CounterValue, float64(st.Requests))
	ch <- prometheus.MustNewConstMetric(descDevMatches, prometheus.CounterValue, float64(st.Matches))
	ch <- prometheus.MustNewConstMetric(descDevBusy, prometheus.CounterValue, float64(st.Backpressure))
}

// checkMatcher refuses a device whose matching parameters differ from the
// index's: its matches would not be the oracle's.
func checkMatcher(info nic.Info, want matcher.Options) error {
	got := info.Matcher
	if (got.MinLen != 0 && got.MinLen != want.MinLen) || (got.BlockSize != 0 && got.BlockSize != want.BlockSize) {
		return fmt.Errorf("device %s matches with min_len %d, block %d; the daemon indexes with %d, %d (min_chunk_tokens, chunk_tokens): %w",
			info.Name, got.MinLen, got.BlockSize, want.MinLen, want.BlockSize, nic.ErrIncompatibleImage)
	}
	return nil
}

func loadImageFile(ctx context.Context, dev nic.Device, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("device.image: %w", err)
	}
	defer f.Close()
	img, err := bitstream.Parse(f)
	if err != nil {
		return fmt.Errorf("device.image %s: %w", path, err)
	}
	return dev.Load(ctx, img)
}

// get returns the device, nil when none is up.
func (d *device) get() nic.Device {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.dev
}

// fault logs a device error that is the device's, not the request's.
func (d *device) fault(err error) {
	if errors.Is(err, nic.ErrDeviceFault) || errors.Is(err, nic.ErrTimeout) {
		d.log.Warn("device_fault", "error", err)
	}
}

func (d *device) describe() string {
	if dev := d.get(); dev != nil {
		i := dev.Info()
		return fmt.Sprintf("%s:%s", i.Kind, i.Address)
	}
	return "none (" + d.reason + ")"
}

func (d *device) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dev == nil {
		return nil
	}
	err := d.dev.Close()
	d.dev = nil
	d.reason = "closed"
	return err
}

// dmaPath is the GPU DMA backend, or the reason there is none.
type dmaPath struct {
	dma    gpu.DMA
	reason string
}

// openDMA opens gpu.dma: "auto" is CUDA where libcuda works and the sim
// backend otherwise; a CUDA that does not open is logged and left out.
func openDMA(cfg GPUConfig, given gpu.DMA, log *slog.Logger, m *metrics) *dmaPath {
	if given != nil {
		m.setBackend("dma", true)
		p := &dmaPath{dma: given}
		p.register(m)
		return p
	}
	if cfg.DMA == "off" {
		m.setBackend("dma", false)
		return &dmaPath{reason: "disabled (gpu.dma: off)"}
	}
	dma, err := gpu.OpenDMA(gpu.DMAOptions{Backend: cfg.DMA, Logger: log})
	if err != nil {
		log.Warn("dma_unavailable", "backend", cfg.DMA, "reason", err)
		m.setBackend("dma", false)
		return &dmaPath{reason: err.Error()}
	}
	m.setBackend("dma", true)
	p := &dmaPath{dma: dma}
	p.register(m)
	return p
}

// pooled is a DMA backend with a pinned pool (both of gpu's backends).
type pooled interface{ Pool() *gpu.HostPool }

// register exports the pinned pool's occupancy: buffers a Prepare holds or
// a copy still reads. At rest it is zero; a value that stays up means
// buffers are not coming back.
func (p *dmaPath) register(m *metrics) {
	pl, ok := p.dma.(pooled)
	if !ok || pl.Pool() == nil {
		return
	}
	pool := pl.Pool()
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvloom_dma_pool_used_bytes", Help: "Pinned pool memory of the DMA backend in use (layer buffers being stitched or copied)."},
			func() float64 { return float64(pool.InUseBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvloom_dma_pool_capacity_bytes", Help: "Pinned pool memory of the DMA backend."},
			func() float64 { return float64(pool.Size()) }),
	)
}

func (p *dmaPath) describe() string {
	if p.dma != nil {
		return p.dma.Backend()
	}
	return "none (" + p.reason + ")"
}

func (p *dmaPath) close() error {
	if p.dma == nil {
		return nil
	}
	return p.dma.Close()
}
