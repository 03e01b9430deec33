package topology

import (
	"math"
	"regexp"
	"slices"
	"strings"
)

var (
	bdfRE        = regexp.MustCompile(`^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7]$`)
	hostBridgeRE = regexp.MustCompile(`^pci[0-9a-fA-F]{4}:[0-9a-fA-F]{2}$`)
)

// Validate checks the topology and returns every problem it finds at once
// (errors.Join of *FieldError), or nil. Each problem wraps one of the
// sentinels of errors.go.
func (t *Topology) Validate() error {
	var p problems
	t.validate(&p)
	return p.err()
}

func (t *Topology) validate(p *problems) {
	if t.Version != Version {
		if t.Version == 0 {
			p.add([]any{"version"}, ErrVersion, "missing; this file format is version %d", Version)
		} else {
			p.add([]any{"version"}, ErrVersion, "version %d, this package reads version %d", t.Version, Version)
		}
	}
	custom := map[string]bool{}
	for i := range t.GPUModels {
		g := &t.GPUModels[i]
		path := []any{"gpu_models", i}
		lname := strings.ToLower(g.Name)
		switch {
		case g.Name == "":
			p.add(at(path, "name"), ErrInvalid, "empty name")
		case custom[lname]:
			p.add(at(path, "name"), ErrDuplicate, "GPU model %q defined twice", g.Name)
		default:
			if _, ok := GPUPreset(g.Name); ok {
				p.add(at(path, "name"), ErrDuplicate, "GPU model %q shadows the built-in preset of that name", g.Name)
			}
		}
		custom[lname] = true
		positiveSize(p, at(path, "memory"), g.Memory)
		positiveBandwidth(p, at(path, "memory_bandwidth"), g.MemoryBandwidth, true)
		positiveFloat(p, at(path, "bf16_tflops"), g.BF16TFLOPS, true)
		positiveFloat(p, at(path, "fp16_tflops"), g.FP16TFLOPS, false)
		positiveFloat(p, at(path, "fp8_tflops"), g.FP8TFLOPS, false)
		if g.PCIeGen < 1 || g.PCIeGen > 6 {
			p.add(at(path, "pcie_gen"), ErrNegative, "PCIe generation %d, want 1 to 6", g.PCIeGen)
		}
		positiveBandwidth(p, at(path, "nvlink"), g.NVLink, false)
		fraction(p, at(path, "prefill_efficiency"), g.PrefillEfficiency)
		fraction(p, at(path, "decode_efficiency"), g.DecodeEfficiency)
	}

	if len(t.Hosts) == 0 {
		p.add([]any{"hosts"}, ErrInvalid, "no hosts")
	}
	top := map[string]string{} // host and switch names → what they are
	for i := range t.Hosts {
		h := &t.Hosts[i]
		path := []any{"hosts", i}
		if checkName(p, at(path, "name"), h.Name) {
			if what, dup := top[h.Name]; dup {
				p.add(at(path, "name"), ErrDuplicate, "name %q is already used by a %s", h.Name, what)
			}
			top[h.Name] = "host"
		}
		t.validateHost(p, path, h)
	}
	for i := range t.Switches {
		s := &t.Switches[i]
		path := []any{"switches", i}
		if checkName(p, at(path, "name"), s.Name) {
			if what, dup := top[s.Name]; dup {
				p.add(at(path, "name"), ErrDuplicate, "name %q is already used by a %s", s.Name, what)
			}
			top[s.Name] = "switch"
		}
		checkFabric(p, at(path, "fabric"), s.Fabric)
		nonNegativeDuration(p, at(path, "latency"), s.Latency)
	}
	for i := range t.Links {
		l := &t.Links[i]
		path := []any{"links", i}
		t.checkEndpoint(p, at(path, "a"), l.A)
		t.checkEndpoint(p, at(path, "b"), l.B)
		if l.A != "" && l.A == l.B {
			p.add(at(path, "b"), ErrInvalid, "link from %q to itself", l.A)
		}
		positiveBandwidth(p, at(path, "bandwidth"), l.Bandwidth, false)
		nonNegativeDuration(p, at(path, "latency"), l.Latency)
		nonNegativeDuration(p, at(path, "per_message"), l.PerMessage)
		checkFabric(p, at(path, "fabric"), l.Fabric)
	}
}

func (t *Topology) validateHost(p *problems, path []any, h *Host) {
	switch h.Role {
	case "", RoleCompute, RoleStorage:
	default:
		p.add(at(path, "role"), ErrInvalid, "role %q, want compute or storage", h.Role)
	}
	nodes := map[int]bool{}
	for i, n := range h.NUMA {
		np := at(path, "numa", i)
		if n.Node < 0 {
			p.add(at(np, "node"), ErrNegative, "NUMA node %d is negative", n.Node)
		}
		if nodes[n.Node] {
			p.add(at(np, "node"), ErrDuplicate, "NUMA node %d listed twice", n.Node)
		}
		nodes[n.Node] = true
		if n.Socket < 0 {
			p.add(at(np, "socket"), ErrNegative, "socket %d is negative", n.Socket)
		}
		nonNegativeSize(p, at(np, "memory"), n.Memory)
		positiveBandwidth(p, at(np, "memory_bandwidth"), n.MemoryBandwidth, false)
	}
	checkNUMA := func(fp []any, numa int) {
		if len(h.NUMA) > 0 && numa >= 0 && !nodes[numa] {
			p.add(fp, ErrDangling, "NUMA node %d is not among the host's numa nodes", numa)
		}
		if numa < -1 {
			p.add(fp, ErrNegative, "NUMA node %d, want -1 (unknown) or more", numa)
		}
	}
	positiveBandwidth(p, at(path, "smp", "bandwidth"), h.SMP.Bandwidth, false)
	nonNegativeDuration(p, at(path, "smp", "latency"), h.SMP.Latency)
	nonNegativeDuration(p, at(path, "smp", "per_message"), h.SMP.PerMessage)

	names := map[string]string{}
	pcis := map[string]string{}
	claim := func(fp []any, name, what, pci string, pciPath []any) {
		if checkName(p, fp, name) {
			if other, dup := names[name]; dup {
				p.add(fp, ErrDuplicate, "name %q is already used by a %s on this host", name, other)
			}
			names[name] = what
		}
		if pci != "" {
			key := strings.ToLower(pci)
			if other, dup := pcis[key]; dup {
				p.add(pciPath, ErrDuplicate, "PCI address %s is already used by %s", pci, other)
			}
			pcis[key] = name
		}
	}

	for i := range h.PCIe {
		b := &h.PCIe[i]
		bp := at(path, "pcie", i)
		claim(at(bp, "name"), b.Name, "bridge", b.PCI, at(bp, "pci"))
		switch b.Kind {
		case BridgeHost:
			if b.PCI != "" && !hostBridgeRE.MatchString(b.PCI) {
				p.add(at(bp, "pci"), ErrInvalid, "host bridge address %q, want the sysfs form \"pci0000:3a\"", b.PCI)
			}
			if b.Parent != "" {
				p.add(at(bp, "parent"), ErrInvalid, "a host bridge has no parent (got %q)", b.Parent)
			}
			checkNUMA(at(bp, "numa"), b.NUMA)
		case BridgeRootPort, BridgeSwitch, BridgeOther:
			checkBDF(p, at(bp, "pci"), b.PCI)
			if b.Parent == "" {
				p.add(at(bp, "parent"), ErrInvalid, "a %s needs a parent bridge", b.Kind)
			}
			if b.NUMA != 0 {
				p.add(at(bp, "numa"), ErrInvalid, "only host bridges carry a numa node; a %s inherits its host bridge's", b.Kind)
			}
		default:
			p.add(at(bp, "kind"), ErrInvalid, "bridge kind %q, want host-bridge, root-port, switch or bridge", b.Kind)
		}
		checkLink(p, bp, b.Gen, b.Width)
	}
	for i := range h.PCIe {
		b := &h.PCIe[i]
		bp := at(path, "pcie", i)
		if b.Parent == "" {
			continue
		}
		parent, ok := h.Bridge(b.Parent)
		if !ok {
			p.add(at(bp, "parent"), ErrDangling, "parent %q is not a bridge of host %s", b.Parent, h.Name)
			continue
		}
		if b.Kind == BridgeRootPort && parent.Kind != BridgeHost {
			p.add(at(bp, "parent"), ErrInvalid, "a root port's parent must be a host bridge, %q is a %s", b.Parent, parent.Kind)
		}
		// Walk up: a cycle never reaches a bridge without a parent.
		seen := map[string]bool{b.Name: true}
		for cur := parent; cur != nil && cur.Parent != ""; {
			if seen[cur.Name] {
				p.add(at(bp, "parent"), ErrInvalid, "the PCIe tree has a cycle through %q", cur.Name)
				break
			}
			seen[cur.Name] = true
			next, ok := h.Bridge(cur.Parent)
			if !ok {
				break
			}
			cur = next
		}
	}

	checkAttach := func(dp []any, a Attach) {
		checkBDF(p, at(dp, "pci"), a.PCI)
		checkNUMA(at(dp, "numa"), a.NUMA)
		if a.Parent != "" {
			if _, ok := h.Bridge(a.Parent); !ok {
				p.add(at(dp, "parent"), ErrDangling, "parent %q is not a bridge of host %s", a.Parent, h.Name)
			} else if a.NUMA != 0 {
				if _, numa := h.ancestors(a.Parent, a.NUMA); numa != a.NUMA {
					p.add(at(dp, "numa"), ErrInvalid, "numa %d, but its host bridge is on node %d", a.NUMA, numa)
				}
			}
		}
		checkLink(p, dp, a.Gen, a.Width)
	}
	for i := range h.GPUs {
		g := &h.GPUs[i]
		gp := at(path, "gpus", i)
		claim(at(gp, "name"), g.Name, "GPU", g.PCI, at(gp, "pci"))
		if _, ok := t.GPUModel(g.Model); !ok {
			known := GPUPresetNames()
			for _, c := range t.GPUModels {
				known = append(known, c.Name)
			}
			slices.Sort(known)
			p.add(at(gp, "model"), ErrUnknownPreset, "GPU model %q (known: %s; or define it under gpu_models)", g.Model, strings.Join(known, ", "))
		}
		checkAttach(gp, g.Attach)
	}
	for i := range h.NICs {
		n := &h.NICs[i]
		np := at(path, "nics", i)
		claim(at(np, "name"), n.Name, "NIC", n.PCI, at(np, "pci"))
		switch n.Kind {
		case NICPlain, SmartNIC, DPU, FPGA:
		default:
			p.add(at(np, "kind"), ErrInvalid, "NIC kind %q, want nic, smartnic, dpu or fpga", n.Kind)
		}
		positiveBandwidth(p, at(np, "bandwidth"), n.Bandwidth, true)
		checkFabric(p, at(np, "fabric"), n.Fabric)
		checkAttach(np, n.Attach)
		if a := n.Accel; a != nil {
			ap := at(np, "accel")
			if !n.Kind.IsAccelerator() {
				p.add(ap, ErrInvalid, "a plain NIC has no accelerator; use kind smartnic, dpu or fpga")
			}
			positiveFloat(p, at(ap, "clock_mhz"), a.ClockMHz, false)
			nonNegativeInt(p, at(ap, "lanes"), a.Lanes)
			nonNegativeInt(p, at(ap, "table_entries"), a.TableEntries)
			nonNegativeInt(p, at(ap, "lookup_cycles"), a.LookupCycles)
			nonNegativeInt(p, at(ap, "queue_depth"), a.QueueDepth)
		}
	}
	for i := range h.NVMe {
		d := &h.NVMe[i]
		dp := at(path, "nvme", i)
		claim(at(dp, "name"), d.Name, "NVMe drive", d.PCI, at(dp, "pci"))
		nonNegativeSize(p, at(dp, "capacity"), d.Capacity)
		positiveBandwidth(p, at(dp, "read"), d.Read, false)
		positiveBandwidth(p, at(dp, "write"), d.Write, false)
		checkAttach(dp, d.Attach)
	}
	kinds := map[TierKind]bool{}
	for i := range h.Tiers {
		tr := &h.Tiers[i]
		tp := at(path, "tiers", i)
		switch tr.Kind {
		case TierDRAM, TierNVMe, TierRedis:
		default:
			p.add(at(tp, "kind"), ErrInvalid, "tier kind %q, want dram, nvme or redis", tr.Kind)
		}
		if kinds[tr.Kind] {
			p.add(at(tp, "kind"), ErrDuplicate, "a host has at most one %s tier", tr.Kind)
		}
		kinds[tr.Kind] = true
		positiveSize(p, at(tp, "capacity"), tr.Capacity)
		positiveBandwidth(p, at(tp, "read"), tr.Read, false)
		positiveBandwidth(p, at(tp, "write"), tr.Write, false)
		nonNegativeDuration(p, at(tp, "latency"), tr.Latency)
		if tr.Device != "" {
			if tr.Kind != TierNVMe {
				p.add(at(tp, "device"), ErrInvalid, "only an nvme tier names a device")
			} else if !slices.ContainsFunc(h.NVMe, func(d NVMe) bool { return d.Name == tr.Device }) {
				p.add(at(tp, "device"), ErrDangling, "NVMe drive %q is not on host %s", tr.Device, h.Name)
			}
		}
		if tr.Address != "" && tr.Kind != TierRedis {
			p.add(at(tp, "address"), ErrInvalid, "only a redis tier has an address")
		}
		if tr.Kind == TierRedis && tr.Address != "" && !strings.HasPrefix(tr.Address, "redis://") && !strings.HasPrefix(tr.Address, "rediss://") {
			p.add(at(tp, "address"), ErrInvalid, "redis address %q, want redis://host:port", tr.Address)
		}
	}
}

// checkEndpoint checks one end of a link: a switch, or "host/nic".
func (t *Topology) checkEndpoint(p *problems, path []any, ep string) {
	if ep == "" {
		p.add(path, ErrDangling, "empty endpoint; want a switch name or host/nic")
		return
	}
	host, nic, ok := strings.Cut(ep, "/")
	if !ok {
		if !slices.ContainsFunc(t.Switches, func(s Switch) bool { return s.Name == ep }) {
			if _, isHost := t.Host(ep); isHost {
				p.add(path, ErrDangling, "%q is a host; a link ends at one of its NICs (%s/<nic>)", ep, ep)
			} else {
				p.add(path, ErrDangling, "no switch named %q", ep)
			}
		}
		return
	}
	h, ok := t.Host(host)
	if !ok {
		p.add(path, ErrDangling, "no host named %q", host)
		return
	}
	if _, ok := h.NIC(nic); !ok {
		p.add(path, ErrDangling, "host %s has no NIC named %q", host, nic)
	}
}

// Endpoint resolves a link endpoint: a switch name, or the host and NIC of
// "host/nic".
func (t *Topology) Endpoint(ep string) (host *Host, nic *NIC, sw *Switch, ok bool) {
	if hn, nn, cut := strings.Cut(ep, "/"); cut {
		h, ok := t.Host(hn)
		if !ok {
			return nil, nil, nil, false
		}
		n, ok := h.NIC(nn)
		return h, n, nil, ok
	}
	for i := range t.Switches {
		if t.Switches[i].Name == ep {
			return nil, nil, &t.Switches[i], true
		}
	}
	return nil, nil, nil, false
}

func checkName(p *problems, path []any, name string) bool {
	switch {
	case name == "":
		p.add(path, ErrInvalid, "empty name")
	case strings.ContainsAny(name, "/ \t\n"):
		p.add(path, ErrInvalid, "name %q may not contain '/' or spaces", name)
	default:
		return true
	}
	return false
}

func checkBDF(p *problems, path []any, pci string) {
	if pci != "" && !bdfRE.MatchString(pci) {
		p.add(path, ErrInvalid, "PCI address %q, want domain:bus:device.function like 0000:3b:00.0", pci)
	}
}

func checkLink(p *problems, path []any, gen, width int) {
	if gen < 0 || gen > 6 {
		p.add(at(path, "gen"), ErrNegative, "PCIe generation %d, want 1 to 6", gen)
	}
	switch width {
	case 0, 1, 2, 4, 8, 12, 16, 32:
	default:
		p.add(at(path, "width"), ErrNegative, "PCIe width ×%d, want 1, 2, 4, 8, 12, 16 or 32", width)
	}
}

func checkFabric(p *problems, path []any, f Fabric) {
	switch f {
	case "", Ethernet, InfiniBand:
	default:
		p.add(path, ErrInvalid, "fabric %q, want ethernet or infiniband", f)
	}
}

func positiveBandwidth(p *problems, path []any, b Bandwidth, required bool) {
	if b.IsZero() {
		if required {
			p.add(path, ErrNegative, "missing; a bandwidth like \"400Gbps\" or \"25GB/s\" is required")
		}
		return
	}
	if _, ok := bytesPerSecond[b.Unit]; !ok {
		p.add(path, ErrInvalid, "bandwidth unit %q, want Mbps, Gbps, Tbps, MB/s, GB/s, TB/s or GiB/s", b.Unit)
		return
	}
	if !(b.Value > 0) || math.IsInf(b.Value, 0) {
		p.add(path, ErrNegative, "bandwidth %s must be positive", b)
	}
}

func positiveSize(p *problems, path []any, s Size) {
	if s <= 0 {
		p.add(path, ErrNegative, "capacity %s must be positive", s)
	}
}

func nonNegativeSize(p *problems, path []any, s Size) {
	if s < 0 {
		p.add(path, ErrNegative, "capacity %s is negative", s)
	}
}

func nonNegativeDuration(p *problems, path []any, d Duration) {
	if d < 0 {
		p.add(path, ErrNegative, "duration %s is negative", d)
	}
}

func nonNegativeInt(p *problems, path []any, v int) {
	if v < 0 {
		p.add(path, ErrNegative, "%d is negative", v)
	}
}

func positiveFloat(p *problems, path []any, v float64, required bool) {
	if v == 0 && !required {
		return
	}
	if !(v > 0) || math.IsInf(v, 0) {
		p.add(path, ErrNegative, "%v must be a positive number", v)
	}
}

func fraction(p *problems, path []any, v float64) {
	if !(v > 0 && v <= 1) {
		p.add(path, ErrNegative, "%v must be in (0, 1]", v)
	}
}

// at returns path extended by els in a new slice of exact capacity, so that
// paths derived from one parent never share storage.
func at(path []any, els ...any) []any {
	out := make([]any, 0, len(path)+len(els))
	return append(append(out, path...), els...)
}
