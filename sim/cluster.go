package sim

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

// resource is one direction of one channel bytes cross (a PCIe link, a
// network link, a storage device's read or write side). Transfers reserve
// it first come, first served.
type resource struct {
	name   string
	kind   string
	bw     float64 // bytes/s
	lat    int64   // ns, once per transfer
	perMsg int64   // ns, per message
	freeAt int64
	busy   int64 // ns reserved in total
	bytes  int64
}

// route is a chain of resources crossed together (cut-through): the
// slowest sets the rate, latencies add, the largest per-message cost
// applies.
type route struct {
	links  []int32
	bw     float64
	lat    int64
	perMsg int64
}

// routeGroup is one route per GPU of an instance: TP shards move in
// parallel, each over its own GPU's route.
type routeGroup []route

// Tier indices.
const (
	tierDRAM = iota
	tierNVMe
	tierRedis
	numTiers
)

var tierNames = [numTiers]string{"dram", "nvme", "redis"}

// tierSpec is a storage tier's capacity (tokens of KV) and its resources.
type tierSpec struct {
	present    bool
	capacity   int64 // bytes
	read       int32 // resource ids
	write      int32
	pathPrefix string
	address    string
}

type host struct {
	name    string
	top     *topology.Host
	storage bool
	tiers   [numTiers]tierSpec
	nics    []string
	insts   []int32
}

type instance struct {
	host  int32
	gpus  []string
	eng   *Engine
	nic   string // NIC its remote loads use ("" when the host has none)
	accel bool   // that NIC runs the matcher
	pipe  Pipeline
	dist  topology.Distance // NIC↔first GPU

	dramDown routeGroup   // host DRAM → GPUs
	gpuUp    routeGroup   // GPUs → host DRAM
	nvmeDown routeGroup   // host NVMe → DRAM → GPUs
	dramNVMe route        // host DRAM → host NVMe (write-back, demotion)
	remote   []routeGroup // [storage node × tier]: tier → network → NIC → GPUs
	remoteUp []routeGroup // [storage node]: GPUs → NIC → network → node DRAM
}

// cluster is the simulated hardware built from a topology.
type cluster struct {
	top      *topology.Topology
	res      []resource
	resIdx   map[string]int32
	hosts    []host
	storage  []int32 // host indices of storage nodes with tiers
	insts    []instance
	graph    map[string][]netEdge
	rev      map[string][]string
	netCache map[[2]string][]int32
}

type netEdge struct {
	to  string
	res int32
}

// Tier defaults where the topology gives none (docs/sim-model.md).
const (
	defaultDRAMTierBW   = 100e9
	defaultNVMeReadBW   = 7e9
	defaultNVMeWriteBW  = 4e9
	defaultSMPBandwidth = 64e9
	defaultSwitchLat    = 600 * time.Nanosecond
)

func (c *cluster) addRes(r resource) int32 {
	if i, ok := c.resIdx[r.name]; ok {
		return i
	}
	c.res = append(c.res, r)
	i := int32(len(c.res) - 1)
	c.resIdx[r.name] = i
	return i
}

func (c *cluster) mkRoute(ids ...int32) route {
	r := route{links: ids, bw: math.Inf(1)}
	for _, id := range ids {
		x := &c.res[id]
		r.bw = min(r.bw, x.bw)
		r.lat += x.lat
		r.perMsg = max(r.perMsg, x.perMsg)
	}
	if len(ids) == 0 {
		r.bw = 1e15
	}
	return r
}

// ClusterOptions shape how a topology becomes instances.
type clusterOptions struct {
	model        string
	tp           int
	dtype        string
	nicOverride  map[string]string // "host/gpu" of an instance's first GPU → NIC name
	pipeline     Pipeline
	tableEntries int
}

func buildCluster(top *topology.Topology, o clusterOptions) (*cluster, error) {
	model, err := LookupModel(o.model)
	if err != nil {
		return nil, err
	}
	c := &cluster{top: top, resIdx: map[string]int32{}, netCache: map[[2]string][]int32{}}
	engines := map[string]*Engine{}
	for hi := range top.Hosts {
		th := &top.Hosts[hi]
		h := host{name: th.Name, top: th, storage: th.IsStorage()}
		for _, n := range th.NICs {
			h.nics = append(h.nics, n.Name)
		}
		for _, t := range th.Tiers {
			c.addTier(&h, t)
		}
		c.hosts = append(c.hosts, h)
		if h.storage && (h.tiers[tierDRAM].present || h.tiers[tierNVMe].present || h.tiers[tierRedis].present) && len(h.nics) > 0 {
			c.storage = append(c.storage, int32(hi))
		}
	}
	c.buildNetwork()
	for hi := range top.Hosts {
		th := &top.Hosts[hi]
		if th.IsStorage() || len(th.GPUs) == 0 {
			continue
		}
		if len(th.GPUs)%o.tp != 0 {
			return nil, fmt.Errorf("host %s has %d GPUs, not a multiple of tensor parallelism %d: %w", th.Name, len(th.GPUs), o.tp, ErrConfig)
		}
		for g := 0; g < len(th.GPUs); g += o.tp {
			group := th.GPUs[g : g+o.tp]
			model0 := group[0].Model
			var gpus []string
			for _, gg := range group {
				if gg.Model != model0 {
					return nil, fmt.Errorf("host %s: GPUs %s and %s of one TP group are different models: %w", th.Name, group[0].Name, gg.Name, ErrConfig)
				}
				gpus = append(gpus, gg.Name)
			}
			eng, ok := engines[model0]
			if !ok {
				spec, ok := top.GPUModel(model0)
				if !ok {
					return nil, fmt.Errorf("host %s: GPU model %q: %w", th.Name, model0, ErrUnknownModel)
				}
				if eng, err = NewEngine(model, spec, EngineOptions{TP: o.tp, DType: o.dtype}); err != nil {
					return nil, fmt.Errorf("host %s: %w", th.Name, err)
				}
				engines[model0] = eng
			}
			inst := instance{host: int32(hi), gpus: gpus, eng: eng}
			if err := c.wireInstance(&inst, o); err != nil {
				return nil, err
			}
			c.hosts[hi].insts = append(c.hosts[hi].insts, int32(len(c.insts)))
			c.insts = append(c.insts, inst)
		}
	}
	if len(c.insts) == 0 {
		return nil, fmt.Errorf("topology %q has no compute host with GPUs: %w", top.Name, ErrConfig)
	}
	return c, nil
}

func (c *cluster) addTier(h *host, t topology.Tier) {
	var k int
	var readBW, writeBW float64
	var lat, perMsg time.Duration
	switch t.Kind {
	case topology.TierDRAM:
		k, readBW, writeBW, lat, perMsg = tierDRAM, defaultDRAMTierBW, defaultDRAMTierBW, time.Microsecond, 0
	case topology.TierNVMe:
		k, readBW, writeBW, lat, perMsg = tierNVMe, defaultNVMeReadBW, defaultNVMeWriteBW, NVMeLink.Latency, NVMeLink.PerMessage
		for _, d := range h.top.NVMe {
			if d.Name == t.Device || t.Device == "" {
				if bw := d.Read.BytesPerSecond(); bw > 0 {
					readBW = bw
				}
				if bw := d.Write.BytesPerSecond(); bw > 0 {
					writeBW = bw
				}
				break
			}
		}
	case topology.TierRedis:
		k, readBW, writeBW, lat, perMsg = tierRedis, RedisLink.Bandwidth, RedisLink.Bandwidth, RedisLink.Latency, RedisLink.PerMessage
	default:
		return
	}
	if bw := t.Read.BytesPerSecond(); bw > 0 {
		readBW = bw
	}
	if bw := t.Write.BytesPerSecond(); bw > 0 {
		writeBW = bw
	}
	if t.Latency > 0 {
		lat = t.Latency.D()
	}
	ts := &h.tiers[k]
	ts.present = true
	ts.capacity = int64(t.Capacity)
	ts.pathPrefix = t.Path
	ts.address = t.Address
	kind := "tier-" + tierNames[k]
	ts.read = c.addRes(resource{name: h.name + ":" + tierNames[k] + "-read", kind: kind, bw: readBW, lat: int64(lat), perMsg: int64(perMsg)})
	if k == tierRedis {
		// One single-threaded server: reads and writes share it.
		ts.write = ts.read
	} else {
		ts.write = c.addRes(resource{name: h.name + ":" + tierNames[k] + "-write", kind: kind, bw: writeBW, lat: int64(lat), perMsg: int64(perMsg)})
	}
}

// pcieHops turns topology hops into resources of host h.
func (c *cluster) pcieHops(h *host, hops []topology.Hop) []int32 {
	ids := make([]int32, 0, len(hops))
	for _, hp := range hops {
		parent := hp.Parent
		if parent == "" {
			parent = "rc"
		}
		from, to := hp.Child, parent
		if !hp.Up {
			from, to = to, from
		}
		l := PCIeLink(hp.Gen, hp.Width)
		ids = append(ids, c.addRes(resource{
			name: h.name + ":" + from + "→" + to, kind: "pcie",
			bw: l.Bandwidth, lat: int64(l.Latency) / 2, perMsg: int64(l.PerMessage),
		}))
	}
	return ids
}

func reverseHops(hops []topology.Hop) []topology.Hop {
	out := make([]topology.Hop, len(hops))
	for i, h := range hops {
		h.Up = !h.Up
		out[len(hops)-1-i] = h
	}
	return out
}

// smp returns the socket-interconnect resource of host h in one direction.
func (c *cluster) smp(h *host, from, to int) int32 {
	bw, lat := defaultSMPBandwidth, int64(150*time.Nanosecond)
	if b := h.top.SMP.Bandwidth.BytesPerSecond(); b > 0 {
		bw = b
	}
	if h.top.SMP.Latency > 0 {
		lat = int64(h.top.SMP.Latency)
	}
	return c.addRes(resource{name: fmt.Sprintf("%s:numa%d→numa%d", h.name, from, to), kind: "smp", bw: bw, lat: lat})
}

// toDevice returns the resources from host memory on the NUMA node of
// "from" (a device, or "" for the device's own node) down to dev.
func (c *cluster) hostToDevice(h *host, fromNUMA int, dev string) ([]int32, error) {
	hops, err := h.top.HostRoute(dev)
	if err != nil {
		return nil, err
	}
	var ids []int32
	if numa, _ := h.top.DeviceNUMA(dev); fromNUMA >= 0 && numa != fromNUMA {
		ids = append(ids, c.smp(h, fromNUMA, numa))
	}
	return append(ids, c.pcieHops(h, reverseHops(hops))...), nil
}

func (c *cluster) deviceToHost(h *host, dev string, toNUMA int) ([]int32, error) {
	hops, err := h.top.HostRoute(dev)
	if err != nil {
		return nil, err
	}
	ids := c.pcieHops(h, hops)
	if numa, _ := h.top.DeviceNUMA(dev); toNUMA >= 0 && numa != toNUMA {
		ids = append(ids, c.smp(h, numa, toNUMA))
	}
	return ids, nil
}

// deviceToDevice is a peer-to-peer PCIe transfer when the two devices are
// at most PXB apart; otherwise it bounces through host memory (and the SMP
// link across sockets).
func (c *cluster) deviceToDevice(h *host, from, to string) ([]int32, error) {
	d, err := h.top.Distance(from, to)
	if err != nil {
		return nil, err
	}
	if d <= topology.PXB {
		hops, err := h.top.Route(from, to)
		if err != nil {
			return nil, err
		}
		return c.pcieHops(h, hops), nil
	}
	fromNUMA, _ := h.top.DeviceNUMA(from)
	up, err := c.deviceToHost(h, from, fromNUMA)
	if err != nil {
		return nil, err
	}
	down, err := c.hostToDevice(h, fromNUMA, to)
	if err != nil {
		return nil, err
	}
	return append(up, down...), nil
}

func (c *cluster) wireInstance(in *instance, o clusterOptions) error {
	h := &c.hosts[in.host]
	// NIC assignment: an override, else the nearest NIC (accelerators
	// first), ties to the one serving fewest instances so far.
	if len(h.nics) > 0 {
		key := h.name + "/" + in.gpus[0]
		if n, ok := o.nicOverride[key]; ok {
			if _, ok := h.top.NIC(n); !ok {
				return fmt.Errorf("NIC assignment %s → %s: host %s has no NIC %q: %w", key, n, h.name, n, ErrConfig)
			}
			in.nic = n
		} else {
			in.nic = c.nearestNIC(h, in.gpus[0])
		}
		nic, _ := h.top.NIC(in.nic)
		in.accel = nic.Kind.IsAccelerator()
		in.pipe = o.pipeline.WithAccel(nic.Accel, nic.Bandwidth)
		if o.tableEntries > 0 {
			in.pipe.TableEntries = o.tableEntries
		}
		in.dist, _ = h.top.Distance(in.nic, in.gpus[0])
	} else {
		in.pipe = o.pipeline
	}
	for _, g := range in.gpus {
		numa, _ := h.top.DeviceNUMA(g)
		down, err := c.hostToDevice(h, numa, g)
		if err != nil {
			return err
		}
		in.dramDown = append(in.dramDown, c.mkRoute(down...))
		up, err := c.deviceToHost(h, g, numa)
		if err != nil {
			return err
		}
		in.gpuUp = append(in.gpuUp, c.mkRoute(up...))
		if t := h.tiers[tierNVMe]; t.present {
			ids := []int32{t.read}
			if dev := nvmeDevice(h); dev != "" {
				devNUMA, _ := h.top.DeviceNUMA(dev)
				toHost, err := c.deviceToHost(h, dev, devNUMA)
				if err != nil {
					return err
				}
				ids = append(ids, toHost...)
				down, err := c.hostToDevice(h, devNUMA, g)
				if err != nil {
					return err
				}
				ids = append(ids, down...)
				if len(in.dramNVMe.links) == 0 {
					toDev, err := c.hostToDevice(h, numa, dev)
					if err != nil {
						return err
					}
					in.dramNVMe = c.mkRoute(append(toDev, t.write)...)
				}
			} else {
				ids = append(ids, down...)
				if len(in.dramNVMe.links) == 0 {
					in.dramNVMe = c.mkRoute(t.write)
				}
			}
			in.nvmeDown = append(in.nvmeDown, c.mkRoute(ids...))
		}
	}
	if in.nic == "" {
		return nil
	}
	in.remote = make([]routeGroup, len(c.storage)*numTiers)
	in.remoteUp = make([]routeGroup, len(c.storage))
	src := h.name + "/" + in.nic
	for si, shi := range c.storage {
		sh := &c.hosts[shi]
		snic := sh.nics[0]
		dst := sh.name + "/" + snic
		net, err := c.netPath(dst, src)
		if err != nil {
			return err
		}
		back, err := c.netPath(src, dst)
		if err != nil {
			return err
		}
		snicNUMA, _ := sh.top.DeviceNUMA(snic)
		sDown, err := c.hostToDevice(sh, snicNUMA, snic) // node memory → its NIC
		if err != nil {
			return err
		}
		sUp, err := c.deviceToHost(sh, snic, snicNUMA)
		if err != nil {
			return err
		}
		for _, g := range in.gpus {
			toGPU, err := c.deviceToDevice(h, in.nic, g)
			if err != nil {
				return err
			}
			fromGPU, err := c.deviceToDevice(h, g, in.nic)
			if err != nil {
				return err
			}
			for k := range numTiers {
				t := sh.tiers[k]
				if !t.present {
					continue
				}
				ids := append([]int32{t.read}, sDown...)
				ids = append(ids, net...)
				ids = append(ids, toGPU...)
				in.remote[si*numTiers+k] = append(in.remote[si*numTiers+k], c.mkRoute(ids...))
			}
			ids := append(append(append(slices.Clone(fromGPU), back...), sUp...), sh.tiers[tierDRAM].write)
			if !sh.tiers[tierDRAM].present {
				ids = ids[:len(ids)-1]
			}
			in.remoteUp[si] = append(in.remoteUp[si], c.mkRoute(ids...))
		}
	}
	return nil
}

func nvmeDevice(h *host) string {
	for _, t := range h.top.Tiers {
		if t.Kind == topology.TierNVMe && t.Device != "" {
			return t.Device
		}
	}
	if len(h.top.NVMe) > 0 {
		return h.top.NVMe[0].Name
	}
	return ""
}

func (c *cluster) nearestNIC(h *host, gpu string) string {
	best, bestD, bestLoad, bestAccel := "", topology.Distance(99), 1<<30, false
	load := map[string]int{}
	for _, ii := range h.insts {
		load[c.insts[ii].nic]++
	}
	for _, n := range h.top.NICs {
		d, err := h.top.Distance(n.Name, gpu)
		if err != nil {
			continue
		}
		acc := n.Kind.IsAccelerator()
		better := best == "" ||
			acc && !bestAccel ||
			acc == bestAccel && (d < bestD || d == bestD && load[n.Name] < bestLoad)
		if better {
			best, bestD, bestLoad, bestAccel = n.Name, d, load[n.Name], acc
		}
	}
	return best
}

// buildNetwork makes two resources (one per direction) for every link.
func (c *cluster) buildNetwork() {
	c.graph = map[string][]netEdge{}
	for _, l := range c.top.Links {
		bw := l.Bandwidth.BytesPerSecond()
		fabric := l.Fabric
		for _, ep := range []string{l.A, l.B} {
			if _, nic, _, ok := c.top.Endpoint(ep); ok && nic != nil {
				if bw == 0 || nic.Bandwidth.BytesPerSecond() < bw {
					bw = nic.Bandwidth.BytesPerSecond()
				}
				if fabric == "" {
					fabric = nic.Fabric
				}
			}
		}
		if bw == 0 {
			bw = 100e9 / 8
		}
		model := NetworkLink(fabric, bw)
		lat := model.Latency
		if l.Latency > 0 {
			lat = l.Latency.D()
		}
		per := model.PerMessage
		if l.PerMessage > 0 {
			per = l.PerMessage.D()
		}
		for _, dir := range [][2]string{{l.A, l.B}, {l.B, l.A}} {
			hop := lat
			if _, _, sw, ok := c.top.Endpoint(dir[1]); ok && sw != nil {
				if sw.Latency > 0 {
					hop += sw.Latency.D()
				} else {
					hop += defaultSwitchLat
				}
			}
			id := c.addRes(resource{name: "net:" + dir[0] + "→" + dir[1], kind: "network", bw: model.Bandwidth, lat: int64(hop), perMsg: int64(per)})
			c.graph[dir[0]] = append(c.graph[dir[0]], netEdge{to: dir[1], res: id})
		}
	}
	c.rev = map[string][]string{}
	for from, es := range c.graph {
		for _, e := range es {
			c.rev[e.to] = append(c.rev[e.to], from)
		}
	}
	for _, k := range c.rev {
		slices.Sort(k)
	}
}

// netPath returns the network resources from endpoint src to dst on a
// shortest path; among equal-cost next hops it picks by a hash of the pair
// (ECMP), deterministically.
func (c *cluster) netPath(src, dst string) ([]int32, error) {
	if p, ok := c.netCache[[2]string{src, dst}]; ok {
		return p, nil
	}
	// BFS from dst over reversed edges gives each node's distance to dst.
	dist := map[string]int{dst: 0}
	queue := []string{dst}
	rev := c.rev
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, p := range rev[n] {
			if _, ok := dist[p]; !ok {
				dist[p] = dist[n] + 1
				queue = append(queue, p)
			}
		}
	}
	if _, ok := dist[src]; !ok {
		return nil, fmt.Errorf("no network path from %s to %s: %w", src, dst, ErrConfig)
	}
	seed := mix64(uint64(len(src))<<32 ^ hashString(src) ^ mix64(hashString(dst)))
	var path []int32
	for cur, step := src, 0; cur != dst; step++ {
		var next []netEdge
		for _, e := range c.graph[cur] {
			if d, ok := dist[e.to]; ok && d == dist[cur]-1 {
				next = append(next, e)
			}
		}
		e := next[mix64(seed+uint64(step))%uint64(len(next))]
		path = append(path, e.res)
		cur = e.to
	}
	c.netCache[[2]string{src, dst}] = path
	return path, nil
}

func hashString(s string) uint64 {
	var h uint64 = 0xcbf29ce484222325
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return h
}

// xfer is a reserved transfer: its bytes start arriving at a (after the
// path latency) and arrive evenly over span, in layer order, until end.
type xfer struct {
	start, a, span, end int64
	route               int32 // for the timeline: first resource
}

// reserve books a transfer of bytes in msgs messages (depth in flight) on
// route r no earlier than now. Every resource serves its own backlog first
// come, first served (a fluid FIFO per link): the transfer ends when its
// share has passed the most backlogged or slowest resource, and streams at
// the route's bottleneck rate until then. A slow resource thus delays the
// transfers that cross it without idling the fast links next to it.
func (c *cluster) reserve(now int64, r *route, bytes int64, msgs, depth int) xfer {
	msgs = max(msgs, 1)
	depth = max(min(depth, msgs), 1)
	wire := float64(bytes) / r.bw
	overhead := float64(msgs) * float64(r.perMsg) / 1e9 / float64(depth)
	span := int64(math.Round(max(wire, overhead)*1e9)) + r.perMsg
	end := now + span
	for _, id := range r.links {
		x := &c.res[id]
		occ := int64(math.Round(float64(bytes) / x.bw * 1e9))
		x.freeAt = max(now, x.freeAt) + occ
		x.busy += occ
		x.bytes += bytes
		end = max(end, x.freeAt)
	}
	end += r.lat
	var first int32 = -1
	if len(r.links) > 0 {
		first = r.links[0]
	}
	return xfer{start: end - span - r.lat, a: end - span, span: span, end: end, route: first}
}

// reserveGroup splits a transfer evenly over the routes of a group and
// appends one xfer per route.
func (c *cluster) reserveGroup(out []xfer, now int64, g routeGroup, bytes int64, msgs, depth int) []xfer {
	n := int64(len(g))
	if n == 0 || bytes <= 0 {
		return out
	}
	per := (bytes + n - 1) / n
	m := max(1, (msgs+int(n)-1)/int(n))
	for i := range g {
		out = append(out, c.reserve(now, &g[i], per, m, depth))
	}
	return out
}

func (c *cluster) instName(i int32) string {
	in := &c.insts[i]
	return c.hosts[in.host].name + "/" + strings.Join(in.gpus, "+")
}
