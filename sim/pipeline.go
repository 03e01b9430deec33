package sim

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

// Pipeline is the timing model of an in-network accelerator running
// kvloom's matcher: a rolling-hash pipeline that takes Lanes prompt tokens
// per clock, probes a hot-chunk table, reports matches to the host over
// PCIe and issues prefetch reads on the network. It is the one source of
// truth for these parameters: the simulator times the accelerator with it
// and nic/simnic times itself with it.
//
// The zero value is not useful; start from DefaultPipeline and override
// fields (a sim image's manifest, or a topology NIC's accel block via
// WithAccel). Durations are nanoseconds in JSON and YAML.
type Pipeline struct {
	// ClockHz is the pipeline clock. Default 250 MHz, the user clock of
	// Alveo XDMA shells (docs/sim-model.md).
	ClockHz float64 `json:"clock_hz" yaml:"clock_hz"`
	// Lanes is how many tokens enter the hash pipeline per cycle. Default
	// 16: 4 G tokens/s, 16 GB/s of token ids, above a 100 GbE line rate.
	Lanes int `json:"lanes" yaml:"lanes"`
	// PipelineDepth is the fill latency in cycles from the first token in
	// to the first hash out. Default 32.
	PipelineDepth int `json:"pipeline_depth" yaml:"pipeline_depth"`
	// LookupCycles is the latency of one table probe (on-chip URAM read,
	// key compare). Default 4.
	LookupCycles int `json:"lookup_cycles" yaml:"lookup_cycles"`
	// LookupPorts is how many probes start per cycle (dual-ported RAM).
	// Default 2.
	LookupPorts int `json:"lookup_ports" yaml:"lookup_ports"`
	// TableEntries is the hot-chunk table's capacity. Default 65536.
	TableEntries int `json:"table_entries" yaml:"table_entries"`
	// RequestQueueDepth and CompletionQueueDepth size the host↔device
	// descriptor rings. Defaults 256 and 1024.
	RequestQueueDepth    int `json:"request_queue_depth" yaml:"request_queue_depth"`
	CompletionQueueDepth int `json:"completion_queue_depth" yaml:"completion_queue_depth"`
	// PCIeBandwidth is the effective DMA rate per direction in bytes/s.
	// Default 25.2 GB/s: 80% of PCIe gen4 ×16's 31.5 GB/s.
	PCIeBandwidth float64 `json:"pcie_bandwidth" yaml:"pcie_bandwidth"`
	// PCIeLatency is one DMA round trip (descriptor fetch and data).
	// Default 1 µs.
	PCIeLatency time.Duration `json:"pcie_latency" yaml:"pcie_latency"`
	// NetworkBandwidth is the line rate in bytes/s. Default 12.5 GB/s
	// (100 Gb/s).
	NetworkBandwidth float64 `json:"network_bandwidth" yaml:"network_bandwidth"`
	// NetworkPerMessage is the fixed cost of one network read (RDMA work
	// request and completion). Default 1 µs.
	NetworkPerMessage time.Duration `json:"network_per_message" yaml:"network_per_message"`
	// MaxMessageBytes splits prefetches into messages of at most this size.
	// Default 1 MiB (RDMA efficiency collapses below about 256 KiB).
	MaxMessageBytes int `json:"max_message_bytes" yaml:"max_message_bytes"`
	// PrefetchDepth is how many network reads may be outstanding at once.
	// Default 16.
	PrefetchDepth int `json:"prefetch_depth" yaml:"prefetch_depth"`
	// TokenBytes, DescriptorBytes and CompletionBytes size what crosses
	// PCIe: 4-byte token ids, one 64-byte request descriptor, and one
	// 64-byte completion per reported event (the register map's REQ_DESC and
	// CPL_ENTRY; nic/simnic pins both).
	TokenBytes      int `json:"token_bytes" yaml:"token_bytes"`
	DescriptorBytes int `json:"descriptor_bytes" yaml:"descriptor_bytes"`
	CompletionBytes int `json:"completion_bytes" yaml:"completion_bytes"`
}

// DefaultPipeline returns the documented defaults (docs/sim-model.md).
func DefaultPipeline() Pipeline {
	return Pipeline{
		ClockHz:              250e6,
		Lanes:                16,
		PipelineDepth:        32,
		LookupCycles:         4,
		LookupPorts:          2,
		TableEntries:         65536,
		RequestQueueDepth:    256,
		CompletionQueueDepth: 1024,
		PCIeBandwidth:        0.8 * topology.PCIeBandwidth(4, 16).BytesPerSecond(),
		PCIeLatency:          time.Microsecond,
		NetworkBandwidth:     100e9 / 8,
		NetworkPerMessage:    time.Microsecond,
		MaxMessageBytes:      1 << 20,
		PrefetchDepth:        16,
		TokenBytes:           4,
		DescriptorBytes:      64,
		CompletionBytes:      64,
	}
}

// Validate reports every field that is out of range.
func (p Pipeline) Validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s = %v, want %s: %w", field, v, want, ErrPipeline))
	}
	if !(p.ClockHz > 0) || math.IsInf(p.ClockHz, 0) {
		bad("clock_hz", p.ClockHz, "> 0")
	}
	ints := []struct {
		name string
		v    int
	}{
		{"lanes", p.Lanes}, {"lookup_ports", p.LookupPorts}, {"table_entries", p.TableEntries},
		{"request_queue_depth", p.RequestQueueDepth}, {"completion_queue_depth", p.CompletionQueueDepth},
		{"max_message_bytes", p.MaxMessageBytes}, {"prefetch_depth", p.PrefetchDepth}, {"token_bytes", p.TokenBytes},
	}
	for _, f := range ints {
		if f.v <= 0 {
			bad(f.name, f.v, "> 0")
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"pipeline_depth", p.PipelineDepth}, {"lookup_cycles", p.LookupCycles}, {"descriptor_bytes", p.DescriptorBytes}, {"completion_bytes", p.CompletionBytes}} {
		if f.v < 0 {
			bad(f.name, f.v, ">= 0")
		}
	}
	if !(p.PCIeBandwidth > 0) || math.IsInf(p.PCIeBandwidth, 0) {
		bad("pcie_bandwidth", p.PCIeBandwidth, "> 0 bytes/s")
	}
	if !(p.NetworkBandwidth > 0) || math.IsInf(p.NetworkBandwidth, 0) {
		bad("network_bandwidth", p.NetworkBandwidth, "> 0 bytes/s")
	}
	if p.PCIeLatency < 0 {
		bad("pcie_latency", p.PCIeLatency, ">= 0")
	}
	if p.NetworkPerMessage < 0 {
		bad("network_per_message", p.NetworkPerMessage, ">= 0")
	}
	return errors.Join(errs...)
}

// WithAccel returns p with the non-zero fields of a topology NIC's accel
// block applied, and the NIC's line rate as NetworkBandwidth when given.
func (p Pipeline) WithAccel(a *topology.Accel, lineRate topology.Bandwidth) Pipeline {
	if a != nil {
		if a.ClockMHz > 0 {
			p.ClockHz = a.ClockMHz * 1e6
		}
		if a.Lanes > 0 {
			p.Lanes = a.Lanes
		}
		if a.TableEntries > 0 {
			p.TableEntries = a.TableEntries
		}
		if a.LookupCycles > 0 {
			p.LookupCycles = a.LookupCycles
		}
		if a.QueueDepth > 0 {
			p.RequestQueueDepth = a.QueueDepth
		}
	}
	if bw := lineRate.BytesPerSecond(); bw > 0 {
		p.NetworkBandwidth = bw
	}
	return p
}

// Work is what one request asks of the device.
type Work struct {
	// Tokens is the number of prompt tokens streamed through the hash
	// pipeline.
	Tokens int
	// Lookups is the number of table probes (one per anchor position the
	// matcher hashes).
	Lookups int
	// Events is the number of match and prefetch events reported to the
	// host (each one completion entry).
	Events int
	// PrefetchBytes is what the device reads from the network for this
	// request; PrefetchMessages how many reads that takes (zero: the bytes
	// split at MaxMessageBytes).
	PrefetchBytes    int64
	PrefetchMessages int
}

// Timing is the device's time for one request, by stage.
type Timing struct {
	// HostToDevice: the request descriptor and token ids over PCIe.
	HostToDevice time.Duration
	// Match: pipeline fill, streaming the tokens (or issuing the probes,
	// whichever is slower) and the last probe's latency.
	Match time.Duration
	// DeviceToHost: completions over PCIe.
	DeviceToHost time.Duration
	// Prefetch: the network reads, started when matching ends.
	Prefetch time.Duration
	// Total is HostToDevice + Match + max(DeviceToHost, Prefetch): the
	// completions and the prefetch proceed in parallel.
	Total time.Duration
}

// MatchCycles returns the clock cycles the matcher spends on w.
func (p Pipeline) MatchCycles(w Work) int64 {
	if w.Tokens <= 0 && w.Lookups <= 0 {
		return 0
	}
	stream := ceilDiv(int64(max(w.Tokens, 0)), int64(p.Lanes))
	probes := ceilDiv(int64(max(w.Lookups, 0)), int64(p.LookupPorts))
	return int64(p.PipelineDepth) + max(stream, probes) + int64(p.LookupCycles)
}

// Messages returns the number of network reads w's prefetch takes.
func (p Pipeline) Messages(w Work) int64 {
	if w.PrefetchMessages > 0 {
		return int64(w.PrefetchMessages)
	}
	return ceilDiv(max(w.PrefetchBytes, 0), int64(p.MaxMessageBytes))
}

// Time returns the device time for one request. It is a pure function of p
// and w; p must be valid.
func (p Pipeline) Time(w Work) Timing {
	var t Timing
	inBytes := float64(p.DescriptorBytes + max(w.Tokens, 0)*p.TokenBytes)
	t.HostToDevice = p.PCIeLatency + seconds(inBytes/p.PCIeBandwidth)
	t.Match = seconds(float64(p.MatchCycles(w)) / p.ClockHz)
	outBytes := float64((max(w.Events, 0) + 1) * p.CompletionBytes) // +1: the done entry
	t.DeviceToHost = p.PCIeLatency/2 + seconds(outBytes/p.PCIeBandwidth)
	if msgs := p.Messages(w); msgs > 0 {
		// Per-message costs overlap up to PrefetchDepth at a time; the
		// prefetch is bound by the wire or by those costs, whichever is
		// slower, plus one message's latency to drain.
		wire := float64(w.PrefetchBytes) / p.NetworkBandwidth
		overhead := float64(msgs) * p.NetworkPerMessage.Seconds() / float64(min(msgs, int64(p.PrefetchDepth)))
		t.Prefetch = p.NetworkPerMessage + seconds(max(wire, overhead))
	}
	t.Total = t.HostToDevice + t.Match + max(t.DeviceToHost, t.Prefetch)
	return t
}

// TokensPerSecond is the matcher's peak streaming rate.
func (p Pipeline) TokensPerSecond() float64 { return p.ClockHz * float64(p.Lanes) }

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// seconds converts float seconds to a Duration, rounding to the nanosecond.
func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }
