package bitstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

// testSim is a stand-in simulator with the behaviour SimTarget requires: it
// refuses configurations beyond its fabric (more than 64 lanes) and keeps
// the previous configuration when it refuses.
type testSim struct {
	mu         sync.Mutex
	cfg        *bitstream.SimConfig
	configured int
}

func (s *testSim) ConfigureSim(_ context.Context, cfg bitstream.SimConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg.Pipeline.Lanes > 64 {
		return fmt.Errorf("simulated fabric has 64 lanes, image wants %d", cfg.Pipeline.Lanes)
	}
	s.cfg = &cfg
	s.configured++
	return nil
}

func (s *testSim) current() (bitstream.SimConfig, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return bitstream.SimConfig{}, s.configured
	}
	return *s.cfg, s.configured
}

func simImage(t testing.TB, key []byte, version string, lanes int) *bitstream.Image {
	t.Helper()
	m := testutil.ImageManifest(bitstream.KindSim, "simnic", version)
	p, err := bitstream.PipelineFromParams(m.Params)
	if err != nil {
		t.Fatal(err)
	}
	p.Lanes = lanes
	m.Params = p.Params()
	return testutil.SignedImage(t, m, key)
}

func newSimSlot(t testing.TB, opts bitstream.SlotOptions) (*bitstream.Slot, *testSim) {
	t.Helper()
	sim := &testSim{}
	l, err := bitstream.NewSimLoader(bitstream.SimOptions{Target: sim})
	if err != nil {
		t.Fatal(err)
	}
	return bitstream.NewSlot(l, opts), sim
}

func TestSlotTrust(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	stranger, _ := testutil.ImageKey(t)
	ctx := t.Context()

	var logs bytes.Buffer
	slot, sim := newSimSlot(t, bitstream.SlotOptions{Trust: ring, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	wantErr(t, slot.Load(ctx, simImage(t, nil, "1.0.0", 8)), bitstream.ErrUnsigned)
	wantErr(t, slot.Load(ctx, simImage(t, stranger, "1.0.0", 8)), bitstream.ErrUntrusted)
	if _, n := sim.current(); n != 0 {
		t.Fatalf("refused images reached the simulator %d times", n)
	}
	if st := slot.Stats(); st.Refused != 2 || st.InsecureAdmitted != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st := slot.Status(); st.Live != nil || st.Last.Stage != "trust" || !strings.Contains(st.Last.Error, "not trusted") {
		t.Fatalf("status %+v", st)
	}
	trusted := simImage(t, key, "1.1.0", 8)
	if err := slot.Load(ctx, trusted); err != nil {
		t.Fatalf("trusted image: %v", err)
	}
	cfg, _ := sim.current()
	if cfg.Image.ID != trusted.ID() || cfg.Pipeline.Lanes != 8 || cfg.Matcher.BlockTokens != 256 {
		t.Fatalf("simulator configured with %+v", cfg)
	}
	if st := slot.Status(); st.Live == nil || st.Live.ID != trusted.ID() || st.LiveInsecure != "" || !st.Last.OK() {
		t.Fatalf("status %+v", st)
	}
	if strings.Contains(logs.String(), "image_admitted_insecure") {
		t.Fatal("secure mode logged an insecure admission")
	}

	// Insecure mode admits unsigned and untrusted images, logging and
	// counting each, but never a signature that does not verify.
	logs.Reset()
	islot, isim := newSimSlot(t, bitstream.SlotOptions{Trust: ring, Insecure: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := islot.Load(ctx, simImage(t, nil, "2.0.0", 8)); err != nil {
		t.Fatalf("insecure mode, unsigned: %v", err)
	}
	if err := islot.Load(ctx, simImage(t, stranger, "2.0.1", 8)); err != nil {
		t.Fatalf("insecure mode, untrusted: %v", err)
	}
	if got := strings.Count(logs.String(), "level=WARN msg=image_admitted_insecure"); got != 2 {
		t.Fatalf("%d insecure admissions logged, want 2:\n%s", got, logs.String())
	}
	if st := islot.Stats(); st.InsecureAdmitted != 2 || st.Loads != 2 {
		t.Fatalf("stats %+v", st)
	}
	if st := islot.Status(); !strings.Contains(st.LiveInsecure, "signed by untrusted key") || !strings.Contains(st.String(), "admitted insecurely") {
		t.Fatalf("status %+v", st)
	}
	good := simImage(t, key, "2.1.0", 8).Bytes()
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1 // the last byte of the signature (a sim image has no payload)
	timg, err := bitstream.Parse(bytes.NewReader(tampered))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wantErr(t, islot.Load(ctx, timg), bitstream.ErrBadSignature)
	if _, n := isim.current(); n != 2 {
		t.Fatalf("bad signature reached the simulator")
	}
}

func TestSlotCompatibility(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	slot, sim := newSimSlot(t, bitstream.SlotOptions{Trust: ring, Require: bitstream.Requirements{
		RegMap: bitstream.RegMapVersion{Major: 2}, Matcher: bitstream.MatcherParams{BlockTokens: 128},
	}})
	err := slot.Load(t.Context(), simImage(t, key, "1.0.0", 8))
	wantErr(t, err, bitstream.ErrIncompatible, "regmap", "matcher.block_tokens")
	if _, n := sim.current(); n != 0 {
		t.Fatal("incompatible image reached the simulator")
	}
	if st := slot.Status(); st.Last.Stage != "compat" {
		t.Fatalf("status %+v", st)
	}

	// The loader's own checks: an fpga image is not for the simulator.
	slot2, _ := newSimSlot(t, bitstream.SlotOptions{Trust: ring})
	wantErr(t, slot2.Load(t.Context(), fpgaImage(t, key)), bitstream.ErrIncompatible, `kind: image has "fpga", target has "sim"`)
	if st := slot2.Status(); st.Last.Stage != "check" {
		t.Fatalf("status %+v", st)
	}
}

// TestSlotSimKeepsPreviousOnFailure: the simulator refuses an image, so the
// previous one stays live without a restore.
func TestSlotSimKeepsPreviousOnFailure(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	slot, sim := newSimSlot(t, bitstream.SlotOptions{Trust: ring})
	first := simImage(t, key, "1.0.0", 8)
	if err := slot.Load(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	err := slot.Load(t.Context(), simImage(t, key, "1.1.0", 128))
	wantErr(t, err, bitstream.ErrTargetUnchanged, "64 lanes")
	cfg, n := sim.current()
	if cfg.Image.ID != first.ID() || n != 1 {
		t.Fatalf("simulator runs %s after %d configurations", cfg.Image, n)
	}
	st := slot.Status()
	if st.Live == nil || st.Live.ID != first.ID() || st.Last.Restored || st.Last.Stage != "load" || slot.Live() != first {
		t.Fatalf("status %+v", st)
	}
	if s := slot.Stats(); s.Failures != 1 || s.Restores != 0 || s.Loads != 1 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(st.String(), "last load of simnic 1.1.0") || !strings.Contains(st.String(), "live simnic 1.0.0") {
		t.Fatalf("status text %q", st.String())
	}
}

func TestSlotConcurrentStatus(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	slot, _ := newSimSlot(t, bitstream.SlotOptions{Trust: ring})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				if err := slot.Load(t.Context(), simImage(t, key, fmt.Sprintf("1.%d.%d", i, j), 8)); err != nil {
					t.Error(err)
				}
				_ = slot.Status().String()
			}
		}()
	}
	wg.Wait()
	if s := slot.Stats(); s.Loads != 20 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNewLoadersValidate(t *testing.T) {
	if _, err := bitstream.NewSimLoader(bitstream.SimOptions{}); err == nil {
		t.Error("NewSimLoader accepted no target")
	}
	if _, err := bitstream.NewXDPLoader(bitstream.XDPOptions{}); err == nil {
		t.Error("NewXDPLoader accepted no target")
	}
	if _, err := bitstream.NewFPGAMgrLoader(bitstream.FPGAMgrOptions{FirmwareDir: "/lib/firmware"}); err == nil {
		t.Error("NewFPGAMgrLoader accepted an absolute FirmwareDir")
	}
	if _, err := bitstream.NewXRTLoader(bitstream.XRTOptions{InterfaceID: "xyz"}); err == nil {
		t.Error("NewXRTLoader accepted a malformed interface id")
	}
	err := (&bitstream.Slot{}).Load(context.Background(), nil)
	if err == nil || errors.Is(err, bitstream.ErrMalformed) {
		t.Errorf("Load(nil) = %v", err)
	}
}
