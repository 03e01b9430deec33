package fpga_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/nictest"
	"github.com/kvloom/kvloom/nic/simnic"
	"github.com/kvloom/kvloom/sim"
)

// TestConformance runs the conformance suite through the FPGA driver over
// the simulated BAR: discovery in a fake sysfs tree, mmap of resource0, the
// register protocol against the simulator on the other side of the file.
func TestConformance(t *testing.T) {
	nictest.Run(t, nictest.Harness{
		Open: func(t *testing.T, c nictest.Config) nic.Device {
			t.Helper()
			p := sim.DefaultPipeline()
			if c.TableCapacity > 0 {
				p.TableEntries = c.TableCapacity
			}
			if c.RequestQueueDepth > 0 {
				p.RequestQueueDepth = c.RequestQueueDepth
			}
			if c.CompletionQueueDepth > 0 {
				p.CompletionQueueDepth = c.CompletionQueueDepth
			}
			return newFakeCard(t, simnic.Options{Pipeline: p}).open(t)
		},
		BAR: func(d nic.Device) *nic.Region { return d.(*fpga.Device).Region() },
	})
}

// TestOpenErrors: every way a card can be unusable is a clear error.
func TestOpenErrors(t *testing.T) {
	s := testutil.NewFakeSysfs(t)
	hb := s.HostBridge(0, 0x5e)
	add := func(bdf string, vendor, device uint16, bars []uint64, file int64) {
		rel := s.Add(hb, testutil.PCIFunc{Addr: bdf, Vendor: vendor, Device: device, Class: 0x120000, PortType: testutil.PortEndpoint,
			Speed: "8.0 GT/s PCIe", Width: 8, BARs: bars})
		if file > 0 {
			s.AddBARFile(rel, 0, file)
		}
	}
	add("0000:5f:00.0", 0x15b3, 0x1017, []uint64{32 << 20}, 32<<20) // a ConnectX-5 NIC
	add("0000:60:00.0", pciid.VendorXilinx, 0xd020, []uint64{32 << 20}, 32<<20)
	add("0000:61:00.0", pciid.VendorXilinx, 0x505c, []uint64{64 << 10}, 64<<10)
	add("0000:62:00.0", pciid.VendorXilinx, 0x505c, []uint64{32 << 20}, 0)
	add("0000:63:00.0", pciid.VendorXilinx, 0x505c, []uint64{32 << 20}, 16<<20)
	cases := []struct {
		name, bdf string
		want      error
		mention   string
	}{
		{"card absent", "0000:99:00.0", nic.ErrNoDevice, "card absent"},
		{"malformed address", "zz:00.0", nic.ErrBadSpec, "zz:00.0"},
		{"no device.function", "3b:00", nic.ErrBadSpec, "3b:00"},
		{"function past 7", "0000:3b:00.8", nic.ErrBadSpec, "function must be 0–7"},
		{"device past 1f", "0000:3b:20.0", nic.ErrBadSpec, "device must be hex 00–1f"},
		{"trailing junk", "0000:3b:00.0/x", nic.ErrBadSpec, "0000:3b:00.0/x"},
		{"empty address", "", nic.ErrBadSpec, "PCI bus id"},
		{"lspci form, upper case", "5F:00.0", fpga.ErrUnsupported, "0000:5f:00.0"}, // normalised before sysfs is read
		{"wrong device id", "0000:5f:00.0", fpga.ErrUnsupported, "15b3:1017"},
		{"golden image", "0000:60:00.0", fpga.ErrUnsupported, "golden"},
		{"BAR too small", "0000:61:00.0", fpga.ErrBARTooSmall, "65536 bytes"},
		{"no resource file", "0000:62:00.0", fpga.ErrBARTooSmall, "resource0"},
		{"resource file disagrees", "0000:63:00.0", nil, "resource table says"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := fpga.Open(t.Context(), c.bdf, fpga.Options{SysfsRoot: s.Root})
			if err == nil {
				d.Close()
				t.Fatalf("open %s succeeded", c.bdf)
			}
			if d != nil {
				t.Errorf("open %s returned a device along with %v", c.bdf, err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("open %s: err = %v, want %v", c.bdf, err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("open %s: error %q does not mention %q", c.bdf, err, c.mention)
			}
		})
	}
}

// entry makes a chunk entry of n tokens from seed.
func entry(t *testing.T, seed, n int) nic.Entry {
	t.Helper()
	salt, err := matcher.NewSalt([]byte("model-01-fpgatest"), "tenant")
	if err != nil {
		t.Fatal(err)
	}
	toks := make([]matcher.Token, n)
	for i := range toks {
		toks[i] = matcher.Token(seed*100003 + i*7919)
	}
	return nic.Entry{Salt: salt, Key: matcher.ChunkKeyOf(salt, toks), Tokens: toks, Rank: float64(seed)}
}

// matches submits the entry's tokens and returns the matches reported.
func matches(t *testing.T, d nic.Device, e nic.Entry) []matcher.Match {
	t.Helper()
	ch, err := d.Submit(t.Context(), nic.Request{ID: 1, Salt: e.Salt, Tokens: append([]matcher.Token{1, 2, 3}, e.Tokens...)})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	var ms []matcher.Match
	for ev := range ch {
		switch ev.Kind {
		case nic.EventMatch:
			ms = append(ms, ev.Match)
		case nic.EventError:
			t.Fatalf("request failed: %v", ev.Err)
		}
	}
	return ms
}

// TestNotProgrammedThenLoad: a card with no kvloom image opens, refuses
// work with ErrNotProgrammed, and serves once an image is loaded through
// the DFL loader.
func TestNotProgrammedThenLoad(t *testing.T) {
	c := newFakeCard(t, simnic.Options{Blank: true})
	d := c.open(t)
	if info := d.Info(); info.Image != "" || info.TableCapacity != 0 || info.Kind != nic.KindFPGA || info.Name != "Intel PAC N3000" {
		t.Errorf("unprogrammed card Info = %+v", info)
	}
	e := entry(t, 1, 80)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); !errors.Is(err, fpga.ErrNotProgrammed) {
		t.Fatalf("push to an unprogrammed card: err = %v, want ErrNotProgrammed", err)
	}
	if _, err := d.Submit(t.Context(), nic.Request{Salt: e.Salt, Tokens: e.Tokens}); !errors.Is(err, fpga.ErrNotProgrammed) {
		t.Fatalf("submit to an unprogrammed card: err = %v, want ErrNotProgrammed", err)
	}
	img := c.image(t, "1.0.0", true)
	if err := d.Load(t.Context(), img); err != nil {
		t.Fatalf("load: %v", err)
	}
	if c.dfl.PRCount() != 1 {
		t.Errorf("partial reconfigurations = %d, want 1", c.dfl.PRCount())
	}
	info := d.Info()
	if info.Image != "kvloom-match@1.0.0" || info.TableCapacity != 1024 || !info.Simulated {
		t.Errorf("after load Info = %+v, want image kvloom-match@1.0.0, capacity 1024 from the manifest", info)
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatalf("push after load: %v", err)
	}
	if ms := matches(t, d, e); len(ms) != 1 || ms[0].ReqOff != 3 || ms[0].Len != 80 {
		t.Errorf("after load, matches = %+v, want the entry at offset 3", ms)
	}
}

// TestLoadFailureKeepsServing: a partial reconfiguration the card refuses
// fails Load with the FME's status, the previous image is restored, the
// table comes back, and matching goes on; an image for another interface
// is refused before anything is touched.
func TestLoadFailureKeepsServing(t *testing.T) {
	c := newFakeCard(t, simnic.Options{Blank: true})
	d := c.open(t)
	if err := d.Load(t.Context(), c.image(t, "1.0.0", true)); err != nil {
		t.Fatalf("load v1: %v", err)
	}
	e := entry(t, 2, 100)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatalf("push: %v", err)
	}
	c.dfl.FailNextPR(syscall.EIO, "reconfig CRC error")
	err := d.Load(t.Context(), c.image(t, "2.0.0", true))
	if err == nil || !errors.Is(err, bitstream.ErrLoadFailed) || !strings.Contains(err.Error(), "reconfig CRC error") {
		t.Fatalf("load with a failing PR: err = %v, want ErrLoadFailed naming the FME status", err)
	}
	if got := d.Info().Image; got != "kvloom-match@1.0.0" {
		t.Errorf("after a failed load the card reports %q, want the restored kvloom-match@1.0.0", got)
	}
	if st := d.Slot().Status(); st.Last == nil || !st.Last.Restored {
		t.Errorf("slot status after the failed load: %+v, want the previous image restored", st)
	}
	if ms := matches(t, d, e); len(ms) != 1 {
		t.Errorf("after a failed load and restore, matches = %+v, want the entry (table pushed back)", ms)
	}
	prs := c.dfl.PRCount()
	other := testutil.ImageManifest(bitstream.KindFPGA, "kvloom-match", "3.0.0")
	other.Target.InterfaceID = "00112233445566778899aabbccddeeff"
	img := testutil.SignedImage(t, other, c.key, bitstream.Payload{Name: "pr", Type: bitstream.PayloadRaw, Data: []byte("x")})
	if err := d.Load(t.Context(), img); !errors.Is(err, nic.ErrIncompatibleImage) {
		t.Fatalf("load for another interface: err = %v, want ErrIncompatibleImage", err)
	}
	if c.dfl.PRCount() != prs {
		t.Errorf("an incompatible image reached the FME (%d → %d reconfigurations)", prs, c.dfl.PRCount())
	}
	if ms := matches(t, d, e); len(ms) != 1 {
		t.Errorf("after a refused image, matches = %+v, want the entry", ms)
	}
	// An untrusted image is refused too.
	foreignKey, _ := testutil.ImageKey(t)
	untrusted := testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindFPGA, "kvloom-match", "4.0.0"), foreignKey,
		bitstream.Payload{Name: "pr", Type: bitstream.PayloadRaw, Data: []byte("y")})
	if err := d.Load(t.Context(), untrusted); !errors.Is(err, bitstream.ErrUntrusted) {
		t.Errorf("load of an untrusted image: err = %v, want ErrUntrusted", err)
	}
}

// TestDiscover lists cards read-only: a programmed card with its table
// occupancy, an unprogrammed one, a golden one, a too-small BAR; a NIC is
// not listed.
func TestDiscover(t *testing.T) {
	c := newFakeCard(t, simnic.Options{})
	d := c.open(t)
	var upd nic.IndexUpdate
	for i := range 7 {
		upd.Add = append(upd.Add, entry(t, 10+i, 70))
	}
	if err := d.PushIndex(t.Context(), upd); err != nil {
		t.Fatalf("push: %v", err)
	}
	s := c.sysfs
	hb := s.HostBridge(0, 0x80)
	add := func(bdf string, vendor, device uint16, bar int64) string {
		rel := s.Add(hb, testutil.PCIFunc{Addr: bdf, Vendor: vendor, Device: device, Class: 0x120000, PortType: testutil.PortEndpoint,
			Speed: "16.0 GT/s PCIe", Width: 16, BARs: []uint64{uint64(bar)}})
		return s.AddBARFile(rel, 0, bar)
	}
	serveBAR(t, add("0000:81:00.0", pciid.VendorXilinx, 0x505c, 32<<20), simnic.Options{Blank: true})
	add("0000:82:00.0", pciid.VendorXilinx, 0xd004, 32<<20)
	add("0000:83:00.0", pciid.VendorIntel, 0x1770, 64<<10)
	add("0000:84:00.0", 0x15b3, 0x101d, 32<<20)

	found, err := fpga.Discover(s.Root)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	byAddr := map[string]nic.Found{}
	for _, f := range found {
		byAddr[f.Address] = f
	}
	if len(found) != 4 {
		t.Fatalf("discovered %d cards, want 4: %+v", len(found), found)
	}
	ok := byAddr[cardBDF]
	if ok.Problem != "" || !ok.Auto || ok.TableEntries != 7 || ok.TableCapacity != sim.DefaultPipeline().TableEntries || !ok.Simulated || ok.Name != "Intel PAC N3000" {
		t.Errorf("programmed card: %+v, want usable with 7 of %d entries", ok, sim.DefaultPipeline().TableEntries)
	}
	for bdf, want := range map[string]string{"0000:81:00.0": "no kvloom image", "0000:82:00.0": "golden", "0000:83:00.0": "too small"} {
		f := byAddr[bdf]
		if f.Auto || !strings.Contains(f.Problem, want) {
			t.Errorf("%s: %+v, want a problem mentioning %q and not auto", bdf, f, want)
		}
	}
	// Discovery changed nothing: the open device still serves its table.
	if ms := matches(t, d, upd.Add[3]); len(ms) != 1 {
		t.Errorf("after discovery, matches = %+v, want 1", ms)
	}
}

// TestRegistry wires the FPGA and simulator backends the way hostctl does
// and opens devices by spec.
func TestRegistry(t *testing.T) {
	c := newFakeCard(t, simnic.Options{})
	simBackend, err := simnic.NewBackend(simnic.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := nic.NewRegistry(fpga.NewBackend(c.options()), simBackend)
	if err != nil {
		t.Fatal(err)
	}
	for spec, want := range map[string]nic.Kind{"auto": nic.KindFPGA, "fpga": nic.KindFPGA, "fpga:3b:00.0": nic.KindFPGA, "sim": nic.KindSim, "sim:simnic": nic.KindSim} {
		d, err := reg.Open(t.Context(), spec)
		if err != nil {
			t.Errorf("open %q: %v", spec, err)
			continue
		}
		if info := d.Info(); info.Kind != want {
			t.Errorf("open %q: kind %s, want %s", spec, info.Kind, want)
		}
		if err := d.Close(); err != nil {
			t.Errorf("close %q: %v", spec, err)
		}
	}
	for spec, want := range map[string]error{"fpga:0000:99:00.0": nic.ErrNoDevice, "xdp:eth0": nic.ErrNoDevice, "fpga:": nic.ErrBadSpec, "FPGA": nic.ErrBadSpec, "sim:other": nic.ErrNoDevice} {
		if d, err := reg.Open(t.Context(), spec); !errors.Is(err, want) {
			if d != nil {
				d.Close()
			}
			t.Errorf("open %q: err = %v, want %v", spec, err, want)
		}
	}
	// Without a usable card, auto falls back to the simulator.
	empty := fpga.Options{SysfsRoot: testutil.NewFakeSysfs(t).Root}
	reg2, err := nic.NewRegistry(fpga.NewBackend(empty), simBackend)
	if err != nil {
		t.Fatal(err)
	}
	d, err := reg2.Open(t.Context(), "auto")
	if err != nil {
		t.Fatalf("auto without cards: %v", err)
	}
	defer d.Close()
	if d.Info().Kind != nic.KindSim {
		t.Errorf("auto without cards opened %s, want the simulator", d.Info().Kind)
	}
	if _, err := reg2.Open(t.Context(), "fpga"); !errors.Is(err, nic.ErrNoDevice) {
		t.Errorf("fpga without cards: err = %v, want ErrNoDevice", err)
	}
}
