package hostctl

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kvloom/kvloom/hostctl/api"
)

// PeerTokenHeader is the metadata key a peer daemon presents its shared
// secret (peers.token) in.
const PeerTokenHeader = "kvloom-peer-token"

// tenanted is every request message that names a tenant.
type tenanted interface{ GetTenant() string }

// admit runs before every API call: refuse during shutdown, check the
// caller may act for the tenant (or as a peer), and take a slot of the
// daemon's and the tenant's in-flight quota. release must be called when
// admit succeeded.
func (d *Daemon) admit(ctx context.Context, method string, req any) (release func(), err error) {
	if d.closing.Load() {
		return nil, fmt.Errorf("%s: %w", method, ErrShutdown)
	}
	tenant := ""
	if strings.HasPrefix(method, "/"+api.Peer_ServiceDesc.ServiceName+"/") {
		if err := d.checkPeer(ctx); err != nil {
			return nil, err
		}
	} else if t, ok := req.(tenanted); ok {
		tenant = t.GetTenant()
		if err := d.checkTenant(ctx, tenant); err != nil {
			return nil, err
		}
	}
	if err := d.quotas.acquire(tenant); err != nil {
		return nil, err
	}
	return func() { d.quotas.release(tenant) }, nil
}

// checkTenant enforces tenancy.tenant_from_cert: over TLS with client
// certificates, the tenant must be the certificate's common name.
func (d *Daemon) checkTenant(ctx context.Context, tenant string) error {
	if !d.cfg.Tenancy.TenantFromCert {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil // the Unix socket: its file mode is the access control
	}
	cn := certName(ti.State)
	if cn == "" || cn != tenant {
		return fmt.Errorf("tenant %q is not the client certificate's (%q): %w", tenant, cn, ErrPermission)
	}
	return nil
}

func certName(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// checkPeer enforces peers.token on the peer service.
func (d *Daemon) checkPeer(ctx context.Context) error {
	want := d.cfg.Peers.Token
	if want == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(PeerTokenHeader)
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte(want)) != 1 {
		return fmt.Errorf("peer call without the peer token: %w", ErrPermission)
	}
	return nil
}

func shortMethod(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

func (d *Daemon) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !ownService(info.FullMethod) {
		return handler(ctx, req)
	}
	d.handlers.Add(1)
	defer d.handlers.Done()
	release, err := d.admit(ctx, info.FullMethod, req)
	if err != nil {
		err = grpcStatus(err)
		d.m.requests.WithLabelValues(shortMethod(info.FullMethod), status.Code(err).String()).Inc()
		return nil, err
	}
	defer release()
	resp, err := handler(ctx, req)
	err = grpcStatus(err)
	d.m.requests.WithLabelValues(shortMethod(info.FullMethod), status.Code(err).String()).Inc()
	return resp, err
}

func ownService(full string) bool {
	return strings.HasPrefix(full, "/"+api.KVLoom_ServiceDesc.ServiceName+"/") || strings.HasPrefix(full, "/"+api.Peer_ServiceDesc.ServiceName+"/")
}

func (d *Daemon) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !ownService(info.FullMethod) {
		return handler(srv, ss)
	}
	d.handlers.Add(1)
	defer d.handlers.Done()
	ws := &admittedStream{ServerStream: ss, d: d, method: info.FullMethod}
	err := grpcStatus(handler(srv, ws))
	if ws.release != nil {
		ws.release()
	}
	d.m.requests.WithLabelValues(shortMethod(info.FullMethod), status.Code(err).String()).Inc()
	return err
}

// admittedStream admits a streaming call when its first message (which
// names the tenant) arrives.
type admittedStream struct {
	grpc.ServerStream
	d       *Daemon
	method  string
	release func()
	refused error
}

func (s *admittedStream) RecvMsg(m any) error {
	if s.refused != nil {
		return s.refused
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.release != nil {
		return nil
	}
	req := m
	if sr, ok := m.(*api.StoreRequest); ok {
		if h := sr.GetHeader(); h != nil {
			req = h
		}
	}
	release, err := s.d.admit(s.Context(), s.method, req)
	if err != nil {
		s.refused = grpcStatus(err)
		return s.refused
	}
	s.release = release
	return nil
}
