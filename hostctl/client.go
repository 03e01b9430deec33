package hostctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
)

// DialOptions configure a client connection. The zero value dials a Unix
// socket, or TCP without TLS.
type DialOptions struct {
	// CA, when set, makes a TCP connection use TLS, trusting this bundle.
	CA string
	// Cert and Key are the client certificate a daemon with client_ca
	// requires.
	Cert, Key string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
	// MaxRecvBytes bounds a response; zero means 64 MiB.
	MaxRecvBytes int
}

// Dial connects to a daemon at target: "unix:///path/kvloomd.sock", a path
// starting with "/" (a Unix socket), or "host:port" (TCP).
func Dial(target string, opts DialOptions) (*grpc.ClientConn, error) {
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	creds := insecure.NewCredentials()
	if opts.CA != "" && !strings.HasPrefix(target, "unix:") {
		pem, err := os.ReadFile(opts.CA)
		if err != nil {
			return nil, fmt.Errorf("dial %s: CA: %w", target, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("dial %s: CA %s holds no certificate: %w", target, opts.CA, ErrConfig)
		}
		tc := &tls.Config{RootCAs: pool, ServerName: opts.ServerName, MinVersion: tls.VersionTLS13}
		if opts.Cert != "" {
			c, err := tls.LoadX509KeyPair(opts.Cert, opts.Key)
			if err != nil {
				return nil, fmt.Errorf("dial %s: client certificate: %w", target, err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		creds = credentials.NewTLS(tc)
	}
	maxRecv := opts.MaxRecvBytes
	if maxRecv == 0 {
		maxRecv = 64 << 20
	}
	c, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return c, nil
}

// Mapped is a segment mapped read-only by a client.
type Mapped struct {
	KV   *kvcache.KV
	data []byte
}

// Close unmaps the segment.
func (m *Mapped) Close() error {
	if m.data == nil {
		return nil
	}
	err := unix.Munmap(m.data)
	m.data = nil
	return err
}

// MapSegment maps a Prepare segment read-only, as an engine does, and
// checks it against the plan's description.
func MapSegment(seg *api.Segment) (*Mapped, error) {
	if seg.GetPath() == "" {
		return nil, fmt.Errorf("segment %s has no host copy (gpu_only: the KV is in the daemon's GPU buffer): %w", seg.GetHandle(), ErrBadRequest)
	}
	if seg.GetLayout() != SegmentLayout {
		return nil, fmt.Errorf("segment layout %q, this client reads %q: %w", seg.GetLayout(), SegmentLayout, ErrBadRequest)
	}
	dt, err := kvcache.ParseDType(seg.GetDtype())
	if err != nil {
		return nil, err
	}
	shape := kvcache.Shape{Layers: int(seg.GetLayers()), KVHeads: int(seg.GetKvHeads()), HeadDim: int(seg.GetHeadDim()), DType: dt}
	if want := uint64(shape.Bytes(int(seg.GetTokens()))); want != seg.GetSize() {
		return nil, fmt.Errorf("segment of %d bytes, its shape needs %d: %w", seg.GetSize(), want, ErrBadRequest)
	}
	f, err := os.Open(seg.GetPath())
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), 0, int(seg.GetSize()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map segment: %w", err)
	}
	kv, err := kvcache.WrapKV(shape, int(seg.GetTokens()), data)
	if err != nil {
		unix.Munmap(data)
		return nil, err
	}
	return &Mapped{KV: kv, data: data}, nil
}

// PrepareResult is a whole Prepare stream, collected.
type PrepareResult struct {
	// Plan is the plan with the stream's ChunkDropped events applied: a
	// dropped range has left Ranges, its positions are in Recompute (which
	// equals Done.Recompute), ReusedTokens counts what was served, and
	// Partial is set. An engine that loads after Done uses it as it is.
	Plan   *api.Plan
	Layers []*api.LayerReady
	Done   *api.PrepareDone
	// Dropped are the stream's ChunkDropped events, in order.
	Dropped []*api.ChunkDropped
}

// PrepareAll runs Prepare and collects its stream.
func PrepareAll(ctx context.Context, c api.KVLoomClient, req *api.PrepareRequest) (*PrepareResult, error) {
	stream, err := c.Prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	res := &PrepareResult{}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			if res.Plan == nil || res.Done == nil {
				return nil, fmt.Errorf("prepare stream ended without plan or done: %w", io.ErrUnexpectedEOF)
			}
			if err := res.applyDrops(); err != nil {
				return nil, err
			}
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		switch e := ev.Event.(type) {
		case *api.PrepareEvent_Plan:
			res.Plan = e.Plan
		case *api.PrepareEvent_Layer:
			res.Layers = append(res.Layers, e.Layer)
		case *api.PrepareEvent_Done:
			res.Done = e.Done
		case *api.PrepareEvent_Dropped:
			res.Dropped = append(res.Dropped, e.Dropped)
		}
	}
}

// applyDrops takes the dropped ranges out of the plan and their positions
// into its recompute set, and checks the result against the daemon's final
// set.
func (res *PrepareResult) applyDrops() error {
	if len(res.Dropped) == 0 {
		return nil
	}
	p := res.Plan
	gone := map[[2]int32]string{}
	rec := slices.Clone(p.Recompute)
	for _, d := range res.Dropped {
		for _, r := range d.Ranges {
			gone[[2]int32{r.Start, r.Length}] = r.Chunk
			for q := r.Start; q < r.Start+r.Length; q++ {
				rec = append(rec, q)
			}
		}
	}
	slices.Sort(rec)
	rec = slices.Compact(rec)
	if !slices.Equal(rec, res.Done.GetRecompute()) {
		return fmt.Errorf("prepare: inconsistent stream: the plan's recompute set with the dropped ranges has %d positions, the daemon's final set %d",
			len(rec), len(res.Done.GetRecompute()))
	}
	kept := p.Ranges[:0:0]
	for _, r := range p.Ranges {
		if c, ok := gone[[2]int32{r.Start, r.Length}]; ok && c == r.Chunk {
			p.ReusedTokens -= r.Length
			continue
		}
		kept = append(kept, r)
	}
	p.Ranges, p.Recompute, p.Partial = kept, rec, true
	return nil
}

// StoreKV streams a prompt's KV to the daemon: the header, then each layer
// in parts of at most part bytes (zero means 4 MiB).
func StoreKV(ctx context.Context, c api.KVLoomClient, h *api.StoreHeader, kv *kvcache.KV, part int) (*api.StoreResponse, error) {
	if part <= 0 {
		part = 4 << 20
	}
	stream, err := c.Store(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Header{Header: h}}); err != nil {
		return nil, storeSendErr(stream, err)
	}
	for l := range kv.Shape().Layers {
		b := kv.Layer(l)
		for off := 0; off < len(b); off += part {
			end := min(off+part, len(b))
			msg := &api.StoreRequest{Msg: &api.StoreRequest_Layer{Layer: &api.StoreLayer{Layer: int32(l), Offset: uint64(off), Data: b[off:end]}}}
			if err := stream.Send(msg); err != nil {
				return nil, storeSendErr(stream, err)
			}
		}
	}
	return stream.CloseAndRecv()
}

// storeSendErr turns io.EOF from Send (the server ended the stream) into the
// server's status.
func storeSendErr(stream grpc.ClientStreamingClient[api.StoreRequest, api.StoreResponse], err error) error {
	if err == io.EOF {
		_, rerr := stream.CloseAndRecv()
		if rerr != nil {
			return rerr
		}
	}
	return err
}
