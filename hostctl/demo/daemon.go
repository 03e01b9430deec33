package demo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
)

// Block sizes for the tiny model. The daemon's defaults (256-token prefix
// blocks, 64-token chunks) are sized for real models; stories260K has 512
// positions and the stories are 32–64 tokens, so the demo uses the smallest
// prefix block the matcher allows and a chunk minimum every story meets.
const (
	chunkTokens    = 16
	minChunkTokens = 32
)

// embedded is a daemon serving on a Unix socket in a temporary directory,
// and the client connection the engine uses.
type embedded struct {
	d      *hostctl.Daemon
	cfg    hostctl.Config
	conn   *grpc.ClientConn
	c      api.KVLoomClient
	root   string // holds the data directory and the socket
	segDir string
	served chan error // Serve's result
}

// modelConfig names the engine's model for the daemon: the built-in preset
// with the same fingerprint (stories260K), else the checkpoint itself as an
// extra model.
func modelConfig(e *engine.Engine, dir string) (string, []hostctl.ModelConfig, error) {
	fp := e.Model().Spec.Fingerprint()
	for _, p := range kvcache.Presets() {
		if p.Fingerprint() == fp {
			return p.Name, nil, nil
		}
	}
	ckpt, err := engine.CheckpointPath(dir)
	if err != nil {
		return "", nil, err
	}
	name := "demo-" + strings.TrimSuffix(filepath.Base(ckpt), ".bin")
	return name, []hostctl.ModelConfig{{Name: name, Llama2C: ckpt, KVDType: kvcache.F32.String()}}, nil
}

// startDaemon builds the daemon's configuration (defaults, with every path
// under fresh temporary directories and no metrics listener), starts it,
// serves the API on its Unix socket and dials it.
func startDaemon(ctx context.Context, opts *Options, models []hostctl.ModelConfig) (_ *embedded, err error) {
	root, err := os.MkdirTemp(opts.TempDir, "kvloom-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo directory: %w", err)
	}
	// Segments go on the shared-memory tmpfs engines map them from, when
	// the machine has one.
	segDir, err := os.MkdirTemp("/dev/shm", "kvloom-demo-segments-")
	if err != nil {
		segDir, err = os.MkdirTemp(root, "segments-")
	}
	if err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("segment directory: %w", err)
	}
	em := &embedded{root: root, segDir: segDir}
	defer func() {
		if err != nil {
			os.RemoveAll(segDir)
			os.RemoveAll(root)
		}
	}()
	cfg := hostctl.DefaultConfig()
	cfg.DataDir = filepath.Join(root, "data")
	cfg.Listen.Socket = filepath.Join(root, "kvloomd.sock")
	cfg.Limits.SegmentDir = segDir
	cfg.Metrics.Listen = ""
	cfg.ChunkTokens = chunkTokens
	cfg.MinChunkTokens = minChunkTokens
	// The RAG documents are stored once for every tenant.
	cfg.Tenancy.AllowSharedWrites = true
	// A round a second would leave the accelerator's table nearly empty
	// during a run of a few seconds.
	cfg.Control.Interval = 200 * time.Millisecond
	cfg.Models = models
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	em.cfg = cfg
	d, err := hostctl.New(ctx, cfg, hostctl.Options{Logger: opts.Logger, Version: opts.Version})
	if err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	em.d = d
	abort := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Limits.ShutdownTimeout)
		defer cancel()
		_, err := d.Shutdown(sctx)
		return err
	}
	lis, err := d.ListenUnix()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen: %w", err), abort())
	}
	em.served = make(chan error, 1)
	go func() { em.served <- d.Serve(context.WithoutCancel(ctx), lis) }()
	conn, err := hostctl.Dial(cfg.SocketPath(), hostctl.DialOptions{})
	if err != nil {
		serr := abort()
		return nil, errors.Join(err, serr, <-em.served)
	}
	em.conn, em.c = conn, api.NewKVLoomClient(conn)
	return em, nil
}

// shutdownReport is how the daemon stopped.
type shutdownReport struct {
	hostctl.ShutdownReport
	Err      error // Shutdown's error
	ServeErr error // what Serve returned
	Removed  bool  // every temporary directory is gone (or kept on purpose)
	Kept     string
}

// stop closes the client, shuts the daemon down (graceful, bounded), waits
// for Serve, and removes the temporary directories unless keep.
func (em *embedded) stop(ctx context.Context, keep bool) shutdownReport {
	var rep shutdownReport
	if em.conn != nil {
		em.conn.Close()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), em.cfg.Limits.ShutdownTimeout)
	defer cancel()
	rep.ShutdownReport, rep.Err = em.d.Shutdown(sctx)
	rep.ServeErr = <-em.served
	rmErr := os.RemoveAll(em.segDir)
	if keep {
		// The data directory stays; nothing else of the daemon does.
		rep.Kept = em.cfg.DataDir
		if err := os.Remove(em.cfg.SocketPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			rmErr = errors.Join(rmErr, err)
		}
	} else {
		rmErr = errors.Join(rmErr, os.RemoveAll(em.root))
	}
	rep.Removed = rmErr == nil && gone(em.segDir) && (keep || gone(em.root))
	return rep
}

func gone(p string) bool {
	_, err := os.Stat(p)
	return errors.Is(err, fs.ErrNotExist)
}
