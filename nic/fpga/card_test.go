package fpga_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/simnic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// N3000 is the card the tests fake: an Intel PAC N3000 (DFL family).
const (
	cardBDF    = "0000:3b:00.0"
	cardVendor = pciid.VendorIntel
	cardDevice = pciid.DeviceIntelPACN3000
	barSize    = 16 << 20
)

// fakeCard is a simulated FPGA card: a PCI function in a fake sysfs tree
// whose resource0 is a file the simulator serves from its own mapping, and
// a fake DFL FME through which images are "programmed".
type fakeCard struct {
	sysfs *testutil.FakeSysfs
	rel   string // the function's directory, relative to the sysfs root
	bdf   string
	model *simnic.Model
	dfl   *testutil.FakeDFL
	key   ed25519.PrivateKey
	trust *bitstream.KeyRing
}

// newFakeCard builds the tree with one card and starts its simulator.
func newFakeCard(t *testing.T, opts simnic.Options) *fakeCard {
	t.Helper()
	s := testutil.NewFakeSysfs(t)
	hb := s.HostBridge(0, 0x3a)
	c := &fakeCard{sysfs: s, bdf: cardBDF}
	c.rel = s.Add(hb, testutil.PCIFunc{Addr: cardBDF, Vendor: cardVendor, Device: cardDevice, Class: 0x120000,
		NUMA: 0, CPUs: "0-7", Speed: "8.0 GT/s PCIe", Width: 16, PortType: testutil.PortEndpoint, BARs: []uint64{barSize}})
	c.model = serveBAR(t, s.AddBARFile(c.rel, 0, barSize), opts)
	c.dfl = testutil.NewFakeDFL(t, testutil.FakeDFLOptions{})
	c.key, c.trust = testutil.ImageKey(t)
	return c
}

// serveBAR maps a BAR file with the simulator and serves it until the test
// ends.
func serveBAR(t *testing.T, path string, opts simnic.Options) *simnic.Model {
	t.Helper()
	m, err := simnic.OpenFile(path, opts)
	if err != nil {
		t.Fatalf("simulate card: %v", err)
	}
	testutil.ServeBAR(t, m)
	return m
}

// programmer is the card's loader: the real DFL loader on the fake FME,
// and, once the fake kernel reports the partial reconfiguration done, the
// simulated fabric switched to the image's logic.
type programmer struct {
	bitstream.Loader
	model *simnic.Model
}

func (p programmer) Load(ctx context.Context, img *bitstream.Image) error {
	if err := p.Loader.Load(ctx, img); err != nil {
		return err
	}
	return p.model.Program(ctx, img)
}

// options returns fpga.Options for the card's tree and loader.
func (c *fakeCard) options() fpga.Options {
	return fpga.Options{
		SysfsRoot: c.sysfs.Root,
		Trust:     c.trust,
		NewLoader: func(card fpga.Card, bdf string) (bitstream.Loader, error) {
			l, err := bitstream.NewDFLLoader(bitstream.DFLOptions{Root: c.dfl.Root, Ioctl: c.dfl.Ioctl})
			if err != nil {
				return nil, err
			}
			return programmer{Loader: l, model: c.model}, nil
		},
	}
}

// open opens the card and closes it when the test ends.
func (c *fakeCard) open(t *testing.T) *fpga.Device {
	t.Helper()
	d, err := fpga.Open(t.Context(), c.bdf, c.options())
	if err != nil {
		t.Fatalf("open fake card: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close card: %v", err)
		}
	})
	return d
}

// image builds a signed FPGA image the fake FME accepts (unless accept is
// false), built against its interface.
func (c *fakeCard) image(t *testing.T, version string, accept bool) *bitstream.Image {
	t.Helper()
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvloom-match", version)
	m.Target.InterfaceID = c.dfl.InterfaceID
	m.Matcher.TableCapacity = 1024
	payload := []byte("partial reconfiguration bitstream for kvloom-match " + version)
	if accept {
		c.dfl.Accept(payload, "a1b2c3d4e5f60718293a4b5c6d7e8f90")
	}
	return testutil.SignedImage(t, m, c.key, bitstream.Payload{Name: "pr", Type: bitstream.PayloadRaw, Data: payload})
}
