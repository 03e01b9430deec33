package gpu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/sim/topology"
)

// ExportOptions says what sysfs cannot.
type ExportOptions struct {
	// HostName names the host in the file; empty means "host0".
	HostName string
	// GPUModel is the sim/topology model for GPUs whose PCI device id has
	// no preset (topology.GPUPresetByPCIID). Empty makes such a GPU an error.
	GPUModel string
	// NICBandwidth is assumed for NICs and FPGA cards whose line rate the
	// kernel does not report (link down, no driver); each use is named in
	// the returned notes. Zero means 100 Gb/s.
	NICBandwidth topology.Bandwidth
}

// Export writes the discovered host in the sim/topology file format
// (docs/topology.md): the PCIe tree as host bridges, root ports and
// switches (a switch's downstream ports folded into it), the GPUs with their
// model presets, NICs (BlueField as dpu, Netronome as smartnic, FPGA cards as
// fpga) and NVMe drives. The notes list every assumption made. The result
// is validated; its Host.Distance matches this package's PCIDistance.
func (t *Topology) Export(opts ExportOptions) (*topology.Topology, []string, error) {
	if opts.HostName == "" {
		opts.HostName = "host0"
	}
	if opts.NICBandwidth.IsZero() {
		opts.NICBandwidth = topology.GbitPerSec(100)
	}
	if opts.GPUModel != "" {
		if _, ok := topology.GPUPreset(opts.GPUModel); !ok {
			return nil, nil, fmt.Errorf("export: GPU model %q is not a preset (known: %s): %w", opts.GPUModel, strings.Join(topology.GPUPresetNames(), ", "), ErrBadRequest)
		}
	}
	x := exporter{t: t, opts: opts, host: topology.Host{Name: opts.HostName, Role: topology.RoleCompute}, names: map[string]string{}}
	for _, e := range t.Endpoints {
		if err := x.endpoint(e); err != nil {
			return nil, nil, fmt.Errorf("export %s: %w", e.Name, err)
		}
	}
	out := &topology.Topology{Version: topology.Version, Name: opts.HostName, Hosts: []topology.Host{x.host}}
	if err := out.Validate(); err != nil {
		return nil, nil, fmt.Errorf("export: the topology does not validate: %w", err)
	}
	return out, x.notes, nil
}

type exporter struct {
	t     *Topology
	opts  ExportOptions
	host  topology.Host
	names map[string]string // bridge PCI address (or pciDDDD:BB) → bridge name
	count map[topology.BridgeKind]int
	notes []string
}

var bridgePrefix = map[topology.BridgeKind]string{
	topology.BridgeHost: "hb", topology.BridgeRootPort: "rp", topology.BridgeSwitch: "sw", topology.BridgeOther: "br",
}

func (x *exporter) bridge(key string, b topology.Bridge) string {
	if n, ok := x.names[key]; ok {
		return n
	}
	if x.count == nil {
		x.count = map[topology.BridgeKind]int{}
	}
	b.Name = bridgePrefix[b.Kind] + strconv.Itoa(x.count[b.Kind])
	x.count[b.Kind]++
	x.names[key] = b.Name
	x.host.PCIe = append(x.host.PCIe, b)
	return b.Name
}

// attach builds the device's bridges (host bridge first) and returns where
// the device hangs.
func (x *exporter) attach(d *PCIDevice) topology.Attach {
	numa := -1
	if nodes := x.t.NUMAAffinity(d.Addr); len(nodes) > 0 {
		numa = nodes[0]
	}
	parent := x.bridge(d.HostBridge, topology.Bridge{Kind: topology.BridgeHost, PCI: d.HostBridge, NUMA: numa})
	if hb, ok := x.host.Bridge(parent); ok {
		numa = hb.NUMA // devices under one host bridge share its node
	}
	for _, p := range d.Path {
		switch p.Role {
		case "root-port":
			// The root port's link is the one below it; the format wants
			// the link to the parent, which for a root port is internal.
			parent = x.bridge(p.Addr, topology.Bridge{Kind: topology.BridgeRootPort, PCI: p.Addr, Parent: parent})
		case "switch-upstream":
			parent = x.bridge(p.Addr, topology.Bridge{Kind: topology.BridgeSwitch, PCI: p.Addr, Parent: parent, Gen: p.Link.Speed.Gen(), Width: p.Link.Width})
		case "switch-downstream":
			// folded into its switch
		default:
			parent = x.bridge(p.Addr, topology.Bridge{Kind: topology.BridgeOther, PCI: p.Addr, Parent: parent, Gen: p.Link.Speed.Gen(), Width: p.Link.Width})
		}
	}
	a := topology.Attach{PCI: d.Addr, Parent: parent, NUMA: numa, Gen: d.Link.Speed.Gen(), Width: d.Link.Width}
	if a.Gen == 0 || a.Width == 0 {
		a.Gen, a.Width = 0, 0 // unknown: the format's defaults
	}
	return a
}

func (x *exporter) endpoint(e Endpoint) error {
	d, err := x.t.Device(e.Addr)
	if err != nil {
		return err
	}
	name := strings.ToLower(e.Name)
	switch e.Kind {
	case KindGPU:
		model, ok := topology.GPUPresetByPCIID(d.Device)
		if !ok {
			if x.opts.GPUModel == "" {
				return fmt.Errorf("GPU %s (%s %s) has no sim/topology preset: name one with ExportOptions.GPUModel (kvloom topo --gpu-model; presets: %s): %w",
					d.Addr, d.ID(), d.DeviceName, strings.Join(topology.GPUPresetNames(), ", "), ErrBadRequest)
			}
			model = x.opts.GPUModel
			x.notes = append(x.notes, fmt.Sprintf("%s: %s %s has no preset; exported as %s", name, d.ID(), d.DeviceName, model))
		}
		x.host.GPUs = append(x.host.GPUs, topology.GPU{Name: name, Model: model, Attach: x.attach(d)})
	case KindNIC, KindFPGA:
		n := topology.NIC{Name: name, Kind: topology.NICPlain, Model: d.DeviceName, Attach: x.attach(d), Fabric: topology.Ethernet}
		switch {
		case e.Kind == KindFPGA:
			n.Kind = topology.FPGA
		case d.BlueField:
			n.Kind = topology.DPU
		case d.Vendor == pciid.VendorNetronome || d.Vendor == pciid.VendorCorigine:
			n.Kind = topology.SmartNIC
		}
		if d.Class>>8 == 0x0207 {
			n.Fabric = topology.InfiniBand
		}
		if d.LineRateGbps > 0 {
			n.Bandwidth = topology.GbitPerSec(d.LineRateGbps)
		} else {
			n.Bandwidth = x.opts.NICBandwidth
			x.notes = append(x.notes, fmt.Sprintf("%s: line rate not reported by the kernel; assumed %s", name, n.Bandwidth))
		}
		x.host.NICs = append(x.host.NICs, n)
	case KindNVMe:
		x.host.NVMe = append(x.host.NVMe, topology.NVMe{Name: name, Model: d.DeviceName, Attach: x.attach(d)})
	}
	return nil
}
