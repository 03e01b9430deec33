package hostctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// Options are what the embedding program gives a daemon besides its
// configuration. The zero value is usable.
type Options struct {
	// Logger receives the daemon's logs; nil discards them.
	Logger *slog.Logger
	// Version is reported by Status; empty means "dev".
	Version string
	// Backends replace the accelerator backends hostctl registers itself
	// (simnic, fpga, xdp), for tests that bring a fake card. Nil means
	// hostctl's own.
	Backends []nic.Backend
	// DMA replaces the DMA backend gpu.dma selects (tests pass a sim
	// engine on a virtual clock). The daemon closes it.
	DMA gpu.DMA
	// Now is the clock of the control loop's hotness; nil means time.Now.
	Now func() time.Time
}

// Daemon is kvloomd: the API server, the control loop, the peer tier and
// everything they drive. New starts its background work; Serve answers the
// API on listeners; Shutdown stops it all in reverse order.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	now     func() time.Time
	version string
	started time.Time

	models *models
	index  *matcher.Index
	hot    *matcher.Hot
	spans  *spanIndex
	st     *storage
	dev    *device
	dma    *dmaPath
	segs   *segments
	quotas *quotas
	peers  *peers
	ctl    *control
	owners *owners
	jnl    *journal
	stats  counters

	local  *grpc.Server // Unix socket and Serve: no transport security
	remote *grpc.Server // TCP: TLS unless listen.insecure_tcp
	health *health.Server

	bgCancel context.CancelFunc
	bg       *errgroup.Group
	bgCtx    context.Context
	warmSem  chan struct{}
	warmers  sync.WaitGroup

	clientCAs *x509.CertPool

	handlers sync.WaitGroup // API calls in flight, for shutdown
	closing  atomic.Bool
	reqID    atomic.Uint64

	httpMu  sync.Mutex
	httpSrv *http.Server
	listen  []string
}

// counters are the totals Stats reports.
type counters struct {
	prepares, lookups, stores, promptTokens, reusedTokens, partial, imageLoads atomic.Uint64
	dropped, promotions, promotionRejects                                      atomic.Uint64
}

// New opens every backend the configuration names and starts the daemon's
// background work (control loop, peer sync, segment expiry). Optional
// backends that fail are logged, reported in Status and the
// kvloom_backend_up gauge, and left out; a required one (device.required)
// fails New with ErrBackend.
func New(ctx context.Context, cfg Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: opts.Logger, m: newMetrics(), now: opts.Now, version: opts.Version, started: time.Now()}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.version == "" {
		d.version = "dev"
	}
	ok := false
	defer func() {
		if !ok {
			d.closeBackends(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	var err error
	if d.models, err = newModels(cfg.Models, cfg.Limits.MaxTenants); err != nil {
		return nil, err
	}
	if d.index, err = matcher.New(d.matcherOptions()); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	if d.hot, err = matcher.NewHot(matcher.HotOptions{
		Capacity: cfg.Control.HotCapacity,
		MinCount: cfg.Control.HotMinCount,
		HalfLife: cfg.Control.HalfLife,
		MinLen:   cfg.MinChunkTokens,
		Anchor:   d.index.AnchorParams(),
	}); err != nil {
		return nil, fmt.Errorf("hot sketch: %w", err)
	}
	if d.spans, err = newSpanIndex(d.matcherOptions(), cfg.Control.SpanChains); err != nil {
		return nil, err
	}
	d.quotas = newQuotas(cfg.Limits, d.m)
	d.owners = newOwners()
	if d.segs, err = newSegments(cfg.Limits.SegmentDir, int64(cfg.Limits.SegmentBytes), cfg.Limits.SegmentTTL, d.m); err != nil {
		return nil, err
	}
	if d.st, err = openStorage(ctx, &cfg, d.log, d.m); err != nil {
		return nil, err
	}
	if d.jnl, err = openJournal(filepath.Join(cfg.DataDir, "index.journal"), cfg.ChunkTokens, d.log); err != nil {
		return nil, err
	}
	if err := d.replayJournal(); err != nil {
		return nil, err
	}
	d.dma = openDMA(cfg.GPU, opts.DMA, d.log, d.m)
	if d.dev, err = openDevice(ctx, &cfg, opts.Backends, d.index.Options(), d.log, d.m); err != nil {
		return nil, err
	}
	d.peers = newPeers(&cfg, d, d.log, d.m)
	d.st.src.peers = d.peers
	d.ctl = newControl(&cfg, d)
	if err := d.buildServers(); err != nil {
		return nil, err
	}
	d.warmSem = make(chan struct{}, max(cfg.PrefetchDepth/4, 1))

	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.bgCancel = cancel
	d.bg, bgCtx = errgroup.WithContext(bgCtx)
	d.bgCtx = bgCtx
	d.bg.Go(func() error { return d.segs.run(bgCtx) })
	d.bg.Go(func() error { return d.ctl.run(bgCtx) })
	d.bg.Go(func() error { return d.peers.run(bgCtx) })
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	d.health.SetServingStatus(api.KVLoom_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	d.health.SetServingStatus(api.Peer_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	ok = true
	d.log.Info("daemon_started", "models", len(d.models.byName), "tiers", cfg.TierSpec(), "device", d.dev.describe(), "dma", d.dma.describe())
	return d, nil
}

// matcherOptions are the index's parameters, from the configuration.
func (d *Daemon) matcherOptions() matcher.Options {
	return matcher.Options{
		MinLen:       d.cfg.MinChunkTokens,
		BlockSize:    d.cfg.ChunkTokens,
		MaxPromptLen: d.cfg.Limits.MaxPromptTokens,
		MaxMatches:   d.cfg.Limits.MaxMatches,
	}
}

// Config returns the configuration the daemon runs with.
func (d *Daemon) Config() Config { return d.cfg }

// Handler returns the Prometheus scrape handler of the daemon's registry.
func (d *Daemon) Handler() http.Handler {
	return promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{d.log}})
}

type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Warn("metrics_error", "error", fmt.Sprint(v...)) }

func (d *Daemon) buildServers() error {
	d.health = health.NewServer()
	if ca := d.cfg.Listen.ClientCA; ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("listen.client_ca: %w", err)
		}
		d.clientCAs = x509.NewCertPool()
		if !d.clientCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("listen.client_ca %s: no certificate in it: %w", ca, ErrConfig)
		}
	}
	if d.cfg.Listen.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(d.cfg.Listen.TLSCert, d.cfg.Listen.TLSKey); err != nil {
			return fmt.Errorf("listen.tls_cert: %w", err)
		}
	}
	common := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(d.cfg.Listen.MaxRecvBytes)),
		grpc.MaxSendMsgSize(int(d.cfg.Listen.MaxSendBytes)),
		grpc.MaxConcurrentStreams(uint32(d.cfg.Listen.MaxStreams)),
		grpc.ChainUnaryInterceptor(d.unaryInterceptor),
		grpc.ChainStreamInterceptor(d.streamInterceptor),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	svc := &service{d: d}
	psvc := &peerService{d: d}
	register := func(s *grpc.Server) {
		api.RegisterKVLoomServer(s, svc)
		api.RegisterPeerServer(s, psvc)
		healthpb.RegisterHealthServer(s, d.health)
		reflection.Register(s)
	}
	d.local = grpc.NewServer(common...)
	register(d.local)
	if d.cfg.Listen.TCP != "" {
		opts := common
		if !d.cfg.Listen.InsecureTCP || d.cfg.Listen.TLSCert != "" {
			opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
				MinVersion:     tls.VersionTLS13,
				GetCertificate: d.serverCert,
				ClientAuth:     d.clientAuth(),
				ClientCAs:      d.clientCAs,
			})))
		}
		d.remote = grpc.NewServer(opts...)
		register(d.remote)
	}
	return nil
}

// Serve answers the API on lis (without transport security: a Unix socket
// or a loopback listener) until Shutdown. It returns nil after a Shutdown.
func (d *Daemon) Serve(ctx context.Context, lis net.Listener) error {
	return d.serveOn(ctx, d.local, lis)
}

// ServeTLS answers the API on lis with the TCP listener's settings (TLS and
// client certificates unless listen.insecure_tcp).
func (d *Daemon) ServeTLS(ctx context.Context, lis net.Listener) error {
	if d.remote == nil {
		return fmt.Errorf("serve tcp: listen.tcp is not configured: %w", ErrConfig)
	}
	return d.serveOn(ctx, d.remote, lis)
}

func (d *Daemon) serveOn(ctx context.Context, s *grpc.Server, lis net.Listener) error {
	if d.closing.Load() {
		lis.Close()
		return ErrShutdown
	}
	stop := context.AfterFunc(ctx, func() { s.Stop() })
	defer stop()
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// ListenUnix creates the Unix socket the configuration names, with its
// permission bits, replacing a stale one.
func (d *Daemon) ListenUnix() (net.Listener, error) {
	path := d.cfg.SocketPath()
	if path == "" {
		return nil, fmt.Errorf("listen: unix socket disabled: %w", ErrConfig)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A socket nobody answers on is left over from a crash.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another daemon is serving it: %w", path, ErrConfig)
		}
		os.Remove(path)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	mode, _ := strconv.ParseUint(d.cfg.Listen.SocketMode, 8, 32)
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return lis, nil
}

// Run is kvloomd: it listens where the configuration says (Unix socket,
// TCP, metrics), serves until ctx ends (SIGTERM), then shuts down under
// limits.shutdown_timeout and returns what could not be finished.
func (d *Daemon) Run(ctx context.Context) error {
	// Every listener is open, and d.listen (which Status reads) is set,
	// before the first one serves.
	var listeners []net.Listener
	var serves []func() error
	fail := func(err error) error {
		for _, l := range listeners {
			l.Close()
		}
		return err
	}
	if d.cfg.SocketPath() != "" {
		lis, err := d.ListenUnix()
		if err != nil {
			return fail(err)
		}
		listeners = append(listeners, lis)
		serves = append(serves, func() error { return d.Serve(ctx, lis) })
	}
	if d.cfg.Listen.TCP != "" {
		lis, err := net.Listen("tcp", d.cfg.Listen.TCP)
		if err != nil {
			return fail(fmt.Errorf("listen tcp %s: %w", d.cfg.Listen.TCP, err))
		}
		listeners = append(listeners, lis)
		serves = append(serves, func() error { return d.ServeTLS(ctx, lis) })
	}
	if d.cfg.Metrics.Listen != "" {
		lis, err := net.Listen("tcp", d.cfg.Metrics.Listen)
		if err != nil {
			return fail(fmt.Errorf("listen metrics %s: %w", d.cfg.Metrics.Listen, err))
		}
		listeners = append(listeners, lis)
		serves = append(serves, func() error { return d.ServeMetrics(lis) })
	}
	for _, l := range listeners {
		d.listen = append(d.listen, l.Addr().Network()+"://"+l.Addr().String())
	}
	var g errgroup.Group
	for _, serve := range serves {
		g.Go(serve)
	}
	d.log.Info("daemon_listening", "addresses", d.listen)
	<-ctx.Done()
	d.log.Info("daemon_stopping", "cause", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.Limits.ShutdownTimeout)
	defer cancel()
	rep, err := d.Shutdown(sctx)
	if werr := g.Wait(); werr != nil {
		err = errors.Join(err, werr)
	}
	d.log.Info("daemon_stopped", "flushed", rep.Flushed, "partial", rep.Partial, "unflushed", rep.Unflushed, "cancelled_requests", rep.Cancelled)
	return err
}

// ServeMetrics serves /metrics (and /healthz) on lis until Shutdown.
func (d *Daemon) ServeMetrics(lis net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if d.closing.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.httpMu.Lock()
	if d.closing.Load() {
		d.httpMu.Unlock()
		lis.Close()
		return nil
	}
	d.httpSrv = srv
	d.httpMu.Unlock()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

// ShutdownReport says what shutdown finished and what it could not.
type ShutdownReport struct {
	// Cancelled is how many API calls were still running at the deadline
	// and were cancelled.
	Cancelled int
	// Flushed counts write-back chunks written; Partial those a durable
	// tier holds though another refused them (Redis down); Unflushed
	// those no durable tier holds: lost at exit.
	Flushed, Partial, Unflushed int
	// Errors are the problems met, each naming the step.
	Errors []string
}

// Shutdown stops the daemon in reverse order of start: stop accepting
// (health NOT_SERVING, listeners closed), let calls in flight finish until
// ctx's deadline and cancel the rest, stop the control loop and peer sync,
// flush write-backs, close the device, the DMA engine, the segments and
// the store. It reports what could not be finished; the error joins the
// failures.
func (d *Daemon) Shutdown(ctx context.Context) (ShutdownReport, error) {
	var rep ShutdownReport
	if !d.closing.CompareAndSwap(false, true) {
		return rep, ErrShutdown
	}
	d.health.Shutdown()
	var errs []error
	step := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			rep.Errors = append(rep.Errors, name+": "+err.Error())
		}
	}
	// Stop accepting; calls in flight run until ctx's deadline.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var wg sync.WaitGroup
		for _, s := range []*grpc.Server{d.local, d.remote} {
			if s != nil {
				wg.Go(s.GracefulStop)
			}
		}
		wg.Wait()
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		rep.Cancelled = d.inflight()
		for _, s := range []*grpc.Server{d.local, d.remote} {
			if s != nil {
				s.Stop()
			}
		}
		<-stopped
	}
	d.handlers.Wait()
	d.httpMu.Lock()
	if d.httpSrv != nil {
		step("metrics server", d.httpSrv.Shutdown(ctx))
	}
	d.httpMu.Unlock()
	d.bgCancel()
	step("background", d.bg.Wait())
	d.warmers.Wait()
	// Flush write-backs under what is left of ctx, but at least a moment,
	// so a short drain deadline does not drop what was accepted.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(deadlineOr(ctx, time.Now())), 5*time.Second))
	defer cancel()
	fl, err := d.st.flush(fctx)
	rep.Flushed, rep.Partial, rep.Unflushed = fl.written, fl.partial, fl.failed
	step("flush write-back", err)
	step("index journal", d.jnl.sync())
	step("close", d.closeBackends(fctx))
	if rep.Unflushed > 0 {
		d.log.Error("writeback_unflushed", "chunks", rep.Unflushed)
	}
	return rep, errors.Join(errs...)
}

func deadlineOr(ctx context.Context, def time.Time) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return def
}

// closeBackends closes what New opened, in reverse order.
func (d *Daemon) closeBackends(ctx context.Context) error {
	var errs []error
	if d.peers != nil {
		errs = append(errs, d.peers.close())
	}
	if d.dev != nil {
		errs = append(errs, d.dev.close())
	}
	if d.segs != nil {
		errs = append(errs, d.segs.closeAll())
	}
	if d.dma != nil {
		errs = append(errs, d.dma.close())
	}
	if d.st != nil {
		errs = append(errs, d.st.close(ctx))
	}
	if d.jnl != nil {
		errs = append(errs, d.jnl.close())
	}
	return errors.Join(errs...)
}

// inflight counts API calls in flight.
func (d *Daemon) inflight() int {
	d.quotas.mu.Lock()
	defer d.quotas.mu.Unlock()
	return d.quotas.inflight
}

// serverCert loads the TLS certificate on each handshake, so a renewed
// certificate is picked up without a restart.
func (d *Daemon) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(d.cfg.Listen.TLSCert, d.cfg.Listen.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	return &c, nil
}

func (d *Daemon) clientAuth() tls.ClientAuthType {
	if d.cfg.Listen.ClientCA != "" {
		return tls.RequireAndVerifyClientCert
	}
	return tls.NoClientCert
}
