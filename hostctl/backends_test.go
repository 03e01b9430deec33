package hostctl

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

func TestRegistryWiring(t *testing.T) {
	cfg := DefaultConfig()
	reg, err := Registry(cfg.Device, matcher.Options{MinLen: 64, BlockSize: 256}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := reg.Kinds(), []nic.Kind{nic.KindFPGA, nic.KindXDP, nic.KindSim}; !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v (fpga first for auto, the simulator last)", got, want)
	}
}

// TestDeviceAbsent: an FPGA the configuration asks for is not there. The
// daemon serves without it and says so; marked required, it fails start-up.
func TestDeviceAbsent(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Device.Backend = "fpga"
	cfg.Device.SysfsRoot = filepath.Join(t.TempDir(), "sys") // no cards
	dt := startDaemon(t, cfg)
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	p := checkExactPrefix(t, dt, m, "acme", toks)
	if p.DeviceBackend != "" {
		t.Fatalf("plan names device %q", p.DeviceBackend)
	}
	st, err := dt.c.Status(t.Context(), &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Backends[0].Name != "device" || st.Backends[0].Up || st.Backends[0].Reason == "" {
		t.Fatalf("status does not report the missing device: %v", st.Backends[0])
	}
	_, err = dt.c.LoadImage(t.Context(), &api.LoadImageRequest{Image: []byte("x")})
	wantCode(t, err, codes.FailedPrecondition, "no accelerator")

	cfg2 := testConfig(t)
	cfg2.Device = cfg.Device
	cfg2.Device.Required = true
	if _, err := New(t.Context(), cfg2, Options{}); !errors.Is(err, ErrBackend) {
		t.Fatalf("required absent device: err = %v, want ErrBackend", err)
	}
}

// TestXDPDevice: the daemon drives the real eBPF program in the kernel
// (BPF_PROG_TEST_RUN, no interface), and its hot table sees a reused prefix.
func TestXDPDevice(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Device.Backend = "xdp:test-run"
	cfg.Device.Required = true
	dt := startDaemon(t, cfg)
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	checkExactPrefix(t, dt, m, "acme", toks)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := PrepareAll(t.Context(), dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Plan.DeviceBackend != "xdp" {
			t.Fatalf("device backend %q", res.Plan.DeviceBackend)
		}
		if res.Plan.Ranges[0].Device {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the XDP table never held the prefix: %v", res.Plan)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLoadImage loads a signed sim image through the API; an image of other
// matcher parameters and an untrusted one are refused, the old one stays.
func TestLoadImage(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	dir := t.TempDir()
	_ = ring
	cfg := testConfig(t)
	cfg.Device.TrustDir = dir
	writeTrust(t, dir, key)
	dt := startDaemon(t, cfg)
	man := testutil.ImageManifest(bitstream.KindSim, "kvloom-sim", "1.2.0")
	ap := dt.d.index.AnchorParams()
	man.Matcher.MinMatch, man.Matcher.KGram, man.Matcher.AnchorWindow, man.Matcher.BlockTokens = 32, ap.K, ap.W, 16
	img := testutil.SignedImage(t, man, key)
	r, err := dt.c.LoadImage(t.Context(), &api.LoadImageRequest{Image: img.Bytes()})
	if err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if r.Image == "" {
		t.Fatal("no image reported")
	}
	other := testutil.ImageManifest(bitstream.KindSim, "kvloom-sim", "2.0.0") // 64-token matches
	_, err = dt.c.LoadImage(t.Context(), &api.LoadImageRequest{Image: testutil.SignedImage(t, other, key).Bytes()})
	wantCode(t, err, codes.FailedPrecondition, "")
	stranger, _ := testutil.ImageKey(t)
	_, err = dt.c.LoadImage(t.Context(), &api.LoadImageRequest{Image: testutil.SignedImage(t, man, stranger).Bytes()})
	wantCode(t, err, codes.PermissionDenied, "")
	_, err = dt.c.LoadImage(t.Context(), &api.LoadImageRequest{Image: []byte("not an image")})
	wantCode(t, err, codes.InvalidArgument, "")
	st, err := dt.c.Stats(t.Context(), &api.StatsRequest{})
	if err != nil || st.ImageLoads != 1 {
		t.Fatalf("stats %v %v", st, err)
	}
	dev, err := dt.c.Devices(t.Context(), &api.DevicesRequest{})
	if err != nil || dev.Devices[0].Image != r.Image {
		t.Fatalf("devices %v %v, want image %s", dev, err, r.Image)
	}
}
