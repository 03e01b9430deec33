package tune

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/sim/topology"
)

// DaemonConfig is the part of kvloomd's YAML configuration that the tuner
// sets (docs/sim-model.md, "Tuned daemon configuration"). The daemon reads
// these keys from its config file; fields it does not know are rejected
// there, so this struct is the contract.
type DaemonConfig struct {
	// Version of the configuration format; 1.
	Version int `yaml:"version"`
	// Device configures the accelerator backend.
	Device DeviceConfig `yaml:"device"`
	// ChunkTokens is the matcher's chunk size and the store's unit.
	ChunkTokens int `yaml:"chunk_tokens"`
	// PrefetchDepth is how many chunk reads one request may have in flight.
	PrefetchDepth int `yaml:"prefetch_depth"`
	// Tiers is the store's tier list, fastest first, in the daemon's
	// spec syntax: "mem:SIZE", "disk:PATH:SIZE", "redis://HOST:PORT".
	Tiers string `yaml:"tiers"`
	// Recompute is the default recompute policy for non-prefix reuse:
	// "none", "full", "ratio:R" or "epic:K" (kvcache's plan syntax).
	Recompute string `yaml:"recompute"`
	// Codec is the stored-KV codec: "raw", "fp8" or "cachegen".
	Codec string `yaml:"codec"`
	// NICMap assigns each GPU ("host/gpu") the NIC ("nic") its loads go
	// through.
	NICMap map[string]string `yaml:"nic_map,omitempty"`
}

// DeviceConfig configures the accelerator.
type DeviceConfig struct {
	// Backend selects the device: "auto", "sim", "fpga:BDF", "xdp:IFACE".
	Backend string `yaml:"backend"`
	// TableEntries is how many hot chunks the control loop keeps on it.
	TableEntries int `yaml:"table_entries"`
}

// Marshal writes the configuration with a header comment; map keys are
// sorted, so the output is deterministic.
func (c *DaemonConfig) Marshal(header string) ([]byte, error) {
	var buf bytes.Buffer
	for _, line := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		if line != "" {
			buf.WriteString("# " + line + "\n")
		}
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("marshal daemon config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal daemon config: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseDaemonConfig reads what Marshal writes, strictly.
func ParseDaemonConfig(data []byte) (*DaemonConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c DaemonConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse daemon config: %w", err)
	}
	if c.Version != 1 {
		return nil, fmt.Errorf("daemon config version %d, want 1: %w", c.Version, ErrTune)
	}
	return &c, nil
}

// DaemonConfigFor turns tuned knobs into the daemon configuration for a
// topology: the tier list comes from the first compute host's tiers (DRAM
// scaled by the memory fraction) and the cluster's Redis tier, the NIC map
// from the knobs' assignment.
func DaemonConfigFor(top *topology.Topology, k Knobs, nicMap map[string]string) *DaemonConfig {
	c := &DaemonConfig{
		Version:       1,
		Device:        DeviceConfig{Backend: "auto", TableEntries: k.TableEntries},
		ChunkTokens:   k.ChunkTokens,
		PrefetchDepth: k.PrefetchDepth,
		Recompute:     fmt.Sprintf("ratio:%g", k.RecomputeRatio),
		Codec:         sim.CompressionName(k.Compression),
		NICMap:        nicMap,
	}
	var tiers []string
	for _, h := range top.Hosts {
		if h.IsStorage() || len(h.GPUs) == 0 {
			continue
		}
		for _, t := range h.Tiers {
			switch t.Kind {
			case topology.TierDRAM:
				size := topology.Size(float64(t.Capacity) * k.MemFraction)
				size -= size % topology.MiB
				tiers = append(tiers, "mem:"+size.String())
			case topology.TierNVMe:
				path := t.Path
				if path == "" {
					path = "/var/lib/kvloom"
				}
				tiers = append(tiers, "disk:"+path+":"+t.Capacity.String())
			}
		}
		break
	}
	for _, h := range top.Hosts {
		for _, t := range h.Tiers {
			if t.Kind == topology.TierRedis && t.Address != "" && !slices.Contains(tiers, t.Address) {
				tiers = append(tiers, t.Address)
			}
		}
	}
	c.Tiers = strings.Join(tiers, ",")
	return c
}
