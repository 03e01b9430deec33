package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/simnic"
)

// fakeFPGA puts an Intel PAC N3000 into a fake sysfs tree, its BAR served
// by the simulator, with entries entries in its table; and a second card
// that runs no kvloom image.
func fakeFPGA(t *testing.T, entries int) string {
	t.Helper()
	s := testutil.NewFakeSysfs(t)
	hb := s.HostBridge(0, 0x3a)
	serve := func(bdf string, opts simnic.Options) {
		rel := s.Add(hb, testutil.PCIFunc{Addr: bdf, Vendor: pciid.VendorIntel, Device: pciid.DeviceIntelPACN3000, Class: 0x120000,
			PortType: testutil.PortEndpoint, Speed: "8.0 GT/s PCIe", Width: 16, BARs: []uint64{16 << 20}})
		m, err := simnic.OpenFile(s.AddBARFile(rel, 0, 16<<20), opts)
		if err != nil {
			t.Fatal(err)
		}
		testutil.ServeBAR(t, m)
	}
	serve("0000:3b:00.0", simnic.Options{})
	serve("0000:3c:00.0", simnic.Options{Blank: true})
	d, err := fpga.Open(t.Context(), "0000:3b:00.0", fpga.Options{SysfsRoot: s.Root})
	if err != nil {
		t.Fatal(err)
	}
	salt, err := matcher.NewSalt([]byte("model-01-cli"), "tenant")
	if err != nil {
		t.Fatal(err)
	}
	var upd nic.IndexUpdate
	for i := range entries {
		toks := make([]matcher.Token, 64)
		for j := range toks {
			toks[j] = matcher.Token(i*1000 + j)
		}
		upd.Add = append(upd.Add, nic.Entry{Salt: salt, Key: matcher.ChunkKeyOf(salt, toks), Tokens: toks, Rank: 1})
	}
	if err := d.PushIndex(t.Context(), upd); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil { // the table stays on the card
		t.Fatal(err)
	}
	return s.Root
}

func TestDevicesJSON(t *testing.T) {
	root := fakeFPGA(t, 5)
	out, err := runCLI(t, "devices", "--sysfs-root", root, "--json")
	if err != nil {
		t.Fatalf("kvloom devices --json: %v\n%s", err, out)
	}
	var rep devicesReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	byAddr := map[string]nic.Found{}
	for _, f := range rep.Devices {
		byAddr[f.Address] = f
	}
	card := byAddr["0000:3b:00.0"]
	if card.Kind != nic.KindFPGA || card.TableEntries != 5 || card.TableCapacity <= 0 || !card.Simulated || !card.Auto || card.Problem != "" || card.Name != "Intel PAC N3000" {
		t.Errorf("programmed card: %+v", card)
	}
	if blank := byAddr["0000:3c:00.0"]; blank.Auto || !strings.Contains(blank.Problem, "no kvloom image") || blank.TableEntries != -1 {
		t.Errorf("unprogrammed card: %+v", blank)
	}
	if sim := byAddr[simnic.Address]; sim.Kind != nic.KindSim || sim.Image != "built-in defaults" || !sim.Auto {
		t.Errorf("simulator: %+v", sim)
	}
	if len(rep.Devices) != 3 || len(rep.Errors) != 0 {
		t.Errorf("report %+v, want 3 devices and no errors", rep)
	}
}

func TestDevicesTable(t *testing.T) {
	root := fakeFPGA(t, 2)
	out, err := runCLI(t, "devices", "--sysfs-root", root)
	if err != nil {
		t.Fatalf("kvloom devices: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "KIND") {
		t.Fatalf("output:\n%s\nwant a header and three rows", out)
	}
	for _, want := range []string{"0000:3b:00.0", "Intel PAC N3000", "2/65536", "ready (simulated card)", "no kvloom image", "simnic", "built-in defaults"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// No sysfs at all: the simulator is still there.
	out, err = runCLI(t, "devices", "--sysfs-root", t.TempDir())
	if err != nil || !strings.Contains(out, "simnic") || strings.Contains(out, "fpga") {
		t.Errorf("without cards: %v\n%s", err, out)
	}
}
