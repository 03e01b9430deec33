package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

// Link is the timing model of one kind of channel bytes cross: a PCIe
// link, NVLink, a network fabric, a storage device or a Redis server. The
// presets and their sources are in docs/sim-model.md.
type Link struct {
	Name string
	// Bandwidth is the effective rate per direction in bytes/s: what large
	// transfers reach, after protocol overheads.
	Bandwidth float64
	// Latency is paid once per transfer (propagation, first-byte latency).
	Latency time.Duration
	// PerMessage is the fixed cost of each message (a DMA or RDMA work
	// request, an NVMe command, a Redis GET).
	PerMessage time.Duration
}

// Time returns how long moving bytes in messages messages takes, with up
// to depth messages in flight (their fixed costs overlap): the latency,
// then whichever is slower of the wire and the per-message costs, plus one
// message's cost to drain.
func (l Link) Time(bytes int64, messages, depth int) time.Duration {
	if bytes <= 0 && messages <= 0 {
		return 0
	}
	messages = max(messages, 1)
	depth = max(min(depth, messages), 1)
	wire := float64(bytes) / l.Bandwidth
	overhead := float64(messages) * l.PerMessage.Seconds() / float64(depth)
	return l.Latency + l.PerMessage + seconds(max(wire, overhead))
}

// Effective-bandwidth factors (docs/sim-model.md): pinned-memory DMA over
// PCIe reaches about 80% of the encoded link rate; RDMA on Ethernet (RoCE)
// and InfiniBand reach 95% of the line rate for large messages.
const (
	pcieEfficiency    = 0.8
	networkEfficiency = 0.95
)

// PCIeLink returns the model of a PCIe link of the given generation and
// width.
func PCIeLink(gen, width int) Link {
	raw := topology.PCIeBandwidth(gen, width).BytesPerSecond()
	return Link{
		Name:       fmt.Sprintf("pcie-gen%d-x%d", gen, width),
		Bandwidth:  raw * pcieEfficiency,
		Latency:    time.Microsecond,
		PerMessage: 2 * time.Microsecond,
	}
}

// NetworkLink returns the model of a network link of line rate lineRate
// (bytes/s) on a fabric. RoCE work requests cost more than InfiniBand
// verbs; TCP (Redis) is modelled separately by RedisLink.
func NetworkLink(fabric topology.Fabric, lineRate float64) Link {
	l := Link{Bandwidth: lineRate * networkEfficiency}
	switch fabric {
	case topology.InfiniBand:
		l.Name = fmt.Sprintf("ib-%gG", lineRate*8/1e9)
		l.Latency = time.Microsecond
		l.PerMessage = 500 * time.Nanosecond
	default:
		l.Name = fmt.Sprintf("roce-%gG", lineRate*8/1e9)
		l.Latency = 2 * time.Microsecond
		l.PerMessage = time.Microsecond
	}
	return l
}

// Device and tier defaults.
var (
	// NVMeLink: one PCIe gen4 ×4 data-centre drive, 7 GB/s sequential
	// read, 80 µs read latency, 10 µs per command (queue depth hides most).
	NVMeLink = Link{Name: "nvme", Bandwidth: 7e9, Latency: 80 * time.Microsecond, PerMessage: 10 * time.Microsecond}
	// DRAMLink: host memory copies by the few threads a KV connector uses
	// (about 20 GB/s), not the socket's full bandwidth.
	DRAMLink = Link{Name: "dram", Bandwidth: 20e9, Latency: 100 * time.Nanosecond, PerMessage: time.Microsecond}
	// RedisLink: one Redis server over kernel TCP: a single-threaded server
	// moves about 1.5 GB/s of large values, and each GET costs about 50 µs
	// (a datacentre TCP round trip plus the server's work).
	RedisLink = Link{Name: "redis-tcp", Bandwidth: 1.5e9, Latency: 50 * time.Microsecond, PerMessage: 50 * time.Microsecond}
)

// NVLinkLink returns the model of a GPU's NVLink for peer copies: half the
// total (bidirectional) bandwidth per direction, at 80% efficiency.
func NVLinkLink(gpu topology.GPUSpec) Link {
	return Link{Name: "nvlink", Bandwidth: gpu.NVLink.BytesPerSecond() / 2 * 0.8, Latency: 2 * time.Microsecond, PerMessage: 2 * time.Microsecond}
}

// LinkPreset returns a named link model: pcie4, pcie5, nvlink-h100,
// eth100/eth200/eth400 (RoCE), ib100/ib200/ib400, nvme, dram, redis.
func LinkPreset(name string) (Link, error) {
	switch strings.ToLower(name) {
	case "pcie4":
		return PCIeLink(4, 16), nil
	case "pcie5":
		return PCIeLink(5, 16), nil
	case "nvlink-a100":
		g, _ := topology.GPUPreset("A100-80G")
		return NVLinkLink(g), nil
	case "nvlink-h100":
		g, _ := topology.GPUPreset("H100-SXM")
		return NVLinkLink(g), nil
	case "eth100":
		return NetworkLink(topology.Ethernet, 100e9/8), nil
	case "eth200":
		return NetworkLink(topology.Ethernet, 200e9/8), nil
	case "eth400":
		return NetworkLink(topology.Ethernet, 400e9/8), nil
	case "ib100":
		return NetworkLink(topology.InfiniBand, 100e9/8), nil
	case "ib200":
		return NetworkLink(topology.InfiniBand, 200e9/8), nil
	case "ib400":
		return NetworkLink(topology.InfiniBand, 400e9/8), nil
	case "nvme":
		return NVMeLink, nil
	case "dram":
		return DRAMLink, nil
	case "redis":
		return RedisLink, nil
	}
	return Link{}, fmt.Errorf("link %q (known: %s): %w", name, strings.Join(LinkPresetNames(), ", "), ErrUnknownModel)
}

// LinkPresetNames lists LinkPreset's names.
func LinkPresetNames() []string {
	names := []string{"pcie4", "pcie5", "nvlink-a100", "nvlink-h100", "eth100", "eth200", "eth400", "ib100", "ib200", "ib400", "nvme", "dram", "redis"}
	slices.Sort(names)
	return names
}

// Path is a chain of links a transfer crosses in store-and-forward-free
// (cut-through) fashion: the slowest link sets the rate, the latencies add,
// and the largest per-message cost applies.
type Path []Link

// Bottleneck returns the path as one equivalent link.
func (p Path) Bottleneck() Link {
	if len(p) == 0 {
		return Link{Name: "local", Bandwidth: 1e18}
	}
	out := Link{Name: p[0].Name, Bandwidth: p[0].Bandwidth}
	names := make([]string, 0, len(p))
	for _, l := range p {
		names = append(names, l.Name)
		out.Bandwidth = min(out.Bandwidth, l.Bandwidth)
		out.Latency += l.Latency
		out.PerMessage = max(out.PerMessage, l.PerMessage)
	}
	out.Name = strings.Join(names, "→")
	return out
}
