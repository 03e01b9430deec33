package gpu

import (
	"fmt"
	"time"
)

// Model defaults. They are assumptions, written down in docs/benchmarks.md
// and checked against the figures scripts/gpu-check.sh measures:
//   - a host→device DMA reaches about 83% of the link's raw bandwidth after
//     128b/130b (or FLIT) encoding: 256-byte TLPs carry ~24 bytes of header
//     and framing, and flow-control and ACK DLLPs take a few percent more
//     (pinned cudaMemcpy is commonly reported at ~25 GB/s on Gen4 x16,
//     ~53 GB/s on Gen5 x16);
//   - each copy costs about 2 µs of setup on the copy engine before its
//     first byte moves.
const (
	DefaultLinkEfficiency = 0.83
	DefaultLinkLatency    = 2 * time.Microsecond
)

// LinkModel is the bandwidth and latency of the PCIe path a copy crosses.
type LinkModel struct {
	Speed LinkSpeed // per-lane rate; zero means Gen4 (16 GT/s)
	Width int       // lanes; zero means x16
	// Efficiency is the fraction of the encoded bandwidth a DMA achieves;
	// zero means DefaultLinkEfficiency.
	Efficiency float64
	// Latency is the fixed cost of one copy; zero means DefaultLinkLatency.
	Latency time.Duration
}

func (m LinkModel) withDefaults() LinkModel {
	if m.Speed == 0 {
		m.Speed = 16000
	}
	if m.Width == 0 {
		m.Width = 16
	}
	if m.Efficiency == 0 {
		m.Efficiency = DefaultLinkEfficiency
	}
	if m.Latency == 0 {
		m.Latency = DefaultLinkLatency
	}
	return m
}

// Validate rejects a model that cannot be timed.
func (m LinkModel) Validate() error {
	switch {
	case m.Speed < 0 || m.Speed > maxLinkSpeed:
		return fmt.Errorf("link speed %d MT/s out of (0, %d]: %w", m.Speed, maxLinkSpeed, ErrBadRequest)
	case m.Width < 0 || m.Width > 32:
		return fmt.Errorf("link width x%d out of [1, 32]: %w", m.Width, ErrBadRequest)
	case m.Efficiency < 0 || m.Efficiency > 1:
		return fmt.Errorf("link efficiency %g out of (0, 1]: %w", m.Efficiency, ErrBadRequest)
	case m.Latency < 0:
		return fmt.Errorf("link latency %v is negative: %w", m.Latency, ErrBadRequest)
	}
	return nil
}

// Bandwidth is the modelled DMA rate in bytes per second.
func (m LinkModel) Bandwidth() float64 {
	m = m.withDefaults()
	perLane := float64(m.Speed) * 1e6 / 8 // bytes/s before encoding
	switch {
	case m.Speed <= 5000:
		perLane *= 8.0 / 10 // 8b/10b
	case m.Speed <= 32000:
		perLane *= 128.0 / 130 // 128b/130b
	default:
		perLane *= 242.0 / 256 // PCIe 6+ FLIT mode
	}
	return perLane * float64(m.Width) * m.Efficiency
}

// Duration is how long one copy of n bytes occupies the link.
func (m LinkModel) Duration(n int64) time.Duration {
	m = m.withDefaults()
	return m.Latency + time.Duration(float64(n)/m.Bandwidth()*float64(time.Second))
}

// String is "16.0 GT/s x16, 26.2 GB/s".
func (m LinkModel) String() string {
	d := m.withDefaults()
	return fmt.Sprintf("%s x%d, %.1f GB/s", d.Speed, d.Width, d.Bandwidth()/1e9)
}

// LinkTo models the path from host memory to the device at addr: the
// narrowest link among the device's own and the bridges above it (a Gen4
// x16 GPU behind a Gen3 x16 switch uplink moves data at Gen3 rates).
// Links the kernel does not report are skipped; with none known the
// defaults (Gen4 x16) apply.
func (t *Topology) LinkTo(addr string) (LinkModel, error) {
	d, err := t.Device(addr)
	if err != nil {
		return LinkModel{}, err
	}
	best := LinkModel{}
	rate := func(l Link) float64 {
		return LinkModel{Speed: l.Speed, Width: l.Width}.Bandwidth()
	}
	consider := func(l Link) {
		if l.Speed == 0 || l.Width == 0 {
			return
		}
		if best.Speed == 0 || rate(l) < best.Bandwidth() {
			best = LinkModel{Speed: l.Speed, Width: l.Width}
		}
	}
	consider(d.Link)
	for _, p := range d.Path {
		consider(p.Link)
	}
	return best, nil
}
