package hostctl

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/nic"
)

// service is the KVLoom gRPC service: thin handlers over the Daemon's
// methods. Errors become status codes in the interceptor (grpcStatus).
type service struct {
	api.UnimplementedKVLoomServer
	d *Daemon
}

func (s *service) Prepare(req *api.PrepareRequest, stream grpc.ServerStreamingServer[api.PrepareEvent]) error {
	return s.d.Prepare(stream.Context(), req, stream.Send)
}

func (s *service) Lookup(ctx context.Context, req *api.LookupRequest) (*api.LookupResponse, error) {
	return s.d.Lookup(ctx, req)
}

func (s *service) Store(stream grpc.ClientStreamingServer[api.StoreRequest, api.StoreResponse]) error {
	resp, err := s.d.Store(stream.Context(), stream.Recv)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

func (s *service) Release(ctx context.Context, req *api.ReleaseRequest) (*api.ReleaseResponse, error) {
	return &api.ReleaseResponse{}, s.d.segs.release(req.GetHandle())
}

func (s *service) Evict(ctx context.Context, req *api.EvictRequest) (*api.EvictResponse, error) {
	return s.d.Evict(ctx, req)
}

func (s *service) Pin(ctx context.Context, req *api.PinRequest) (*api.PinResponse, error) {
	return s.d.Pin(ctx, req)
}

func (s *service) Hint(ctx context.Context, req *api.HintRequest) (*api.HintResponse, error) {
	return s.d.Hint(ctx, req)
}

func (s *service) Stats(ctx context.Context, _ *api.StatsRequest) (*api.StatsResponse, error) {
	return s.d.Stats(), nil
}

func (s *service) Status(ctx context.Context, _ *api.StatusRequest) (*api.StatusResponse, error) {
	return s.d.Status(), nil
}

func (s *service) Devices(ctx context.Context, _ *api.DevicesRequest) (*api.DevicesResponse, error) {
	return s.d.Devices(ctx), nil
}

func (s *service) LoadImage(ctx context.Context, req *api.LoadImageRequest) (*api.LoadImageResponse, error) {
	return s.d.LoadImage(ctx, req.GetImage())
}

func (s *service) Ping(context.Context, *api.PingRequest) (*api.PingResponse, error) {
	return &api.PingResponse{}, nil
}

// Stats reports the daemon's counters and the control loop's decisions.
func (d *Daemon) Stats() *api.StatsResponse {
	segs, segBytes := d.segs.stats()
	queued, _ := d.st.queued()
	ix := d.index.Stats()
	resp := &api.StatsResponse{
		Prepares: d.stats.prepares.Load(), Lookups: d.stats.lookups.Load(), Stores: d.stats.stores.Load(),
		PromptTokens: d.stats.promptTokens.Load(), ReusedTokens: d.stats.reusedTokens.Load(),
		PartialPrepares: d.stats.partial.Load(), ImageLoads: d.stats.imageLoads.Load(),
		PeerPromotions: d.stats.promotions.Load(), PeerPromotionRejects: d.stats.promotionRejects.Load(), DroppedChunks: d.stats.dropped.Load(),
		IndexEntries: int32(ix.Chunks + ix.Prefixes), IndexTokens: ix.Tokens,
		Segments: int32(segs), SegmentBytes: uint64(segBytes), WritebackQueued: int32(queued),
		Control: d.ctl.stats(),
	}
	resp.WritebackRejects = d.st.rejects()
	for _, t := range d.st.tierStats() {
		resp.Tiers = append(resp.Tiers, &api.TierStats{Tier: t.Tier, Hits: uint64(max(t.Hits, 0)), Misses: uint64(max(t.Misses, 0)),
			BytesRead: uint64(max(t.BytesRead, 0)), BytesWritten: uint64(max(t.BytesWrite, 0))})
	}
	return resp
}

// Status reports whether the daemon serves and which backends work.
func (d *Daemon) Status() *api.StatusResponse {
	resp := &api.StatusResponse{
		Version: d.version, StartedUnixNs: d.started.UnixNano(), Serving: !d.closing.Load(),
		Models: d.models.names(),
	}
	if len(d.listen) > 0 {
		resp.Listen = fmt.Sprint(d.listen)
	}
	dev := &api.Backend{Name: "device", Kind: d.cfg.Device.Backend, Required: d.cfg.Device.Required}
	if x := d.dev.get(); x != nil {
		i := x.Info()
		dev.Up, dev.Kind = true, fmt.Sprintf("%s:%s", i.Kind, i.Address)
	} else {
		dev.Reason = d.dev.reason
	}
	resp.Backends = append(resp.Backends, dev)
	dma := &api.Backend{Name: "dma", Kind: d.cfg.GPU.DMA}
	if d.dma.dma != nil {
		dma.Up, dma.Kind = true, d.dma.dma.Backend()
	} else {
		dma.Reason = d.dma.reason
	}
	resp.Backends = append(resp.Backends, dma)
	resp.Backends = append(resp.Backends, d.st.status()...)
	resp.Backends = append(resp.Backends, d.peers.status()...)
	return resp
}

// Devices lists the accelerators: the one the daemon drives (live
// counters) and what discovery finds besides.
func (d *Daemon) Devices(ctx context.Context) *api.DevicesResponse {
	resp := &api.DevicesResponse{}
	active := d.dev.get()
	var activeInfo nic.Info
	if active != nil {
		activeInfo = active.Info()
		st := active.Stats()
		resp.Devices = append(resp.Devices, &api.Device{
			Kind: string(activeInfo.Kind), Address: activeInfo.Address, Name: activeInfo.Name, Image: activeInfo.Image,
			TableEntries: int32(st.TableEntries), TableCapacity: int32(st.TableCapacity), Simulated: activeInfo.Simulated,
			Active: true, Capabilities: activeInfo.Capabilities, Requests: st.Requests, Matches: st.Matches,
		})
	}
	found, err := d.dev.reg.Discover(ctx)
	if err != nil {
		resp.Errors = append(resp.Errors, err.Error())
	}
	for _, f := range found {
		if active != nil && f.Kind == activeInfo.Kind && (f.Address == activeInfo.Address || f.Kind == nic.KindSim) {
			continue // the simulator's discovery entry is the device above
		}
		resp.Devices = append(resp.Devices, &api.Device{
			Kind: string(f.Kind), Address: f.Address, Name: f.Name, Image: f.Image, TableEntries: int32(f.TableEntries),
			TableCapacity: int32(f.TableCapacity), Simulated: f.Simulated, Problem: f.Problem,
		})
	}
	return resp
}

// LoadImage loads a signed image onto the daemon's device; the control loop
// pushes the table back on the next round.
func (d *Daemon) LoadImage(ctx context.Context, image []byte) (*api.LoadImageResponse, error) {
	dev := d.dev.get()
	if dev == nil {
		return nil, fmt.Errorf("load image: %s: %w", d.dev.reason, ErrNoDevice)
	}
	img, err := bitstream.Parse(bytes.NewReader(image))
	if err != nil {
		d.m.imageLoads.WithLabelValues("malformed").Inc()
		return nil, fmt.Errorf("load image: %w", err)
	}
	if err := dev.Load(ctx, img); err != nil {
		d.m.imageLoads.WithLabelValues("failed").Inc()
		return nil, fmt.Errorf("load image: %w", err)
	}
	d.stats.imageLoads.Add(1)
	d.m.imageLoads.WithLabelValues("ok").Inc()
	d.ctl.kick()
	return &api.LoadImageResponse{Image: dev.Info().Image}, nil
}
