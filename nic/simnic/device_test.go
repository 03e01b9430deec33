package simnic_test

import (
	"errors"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
)

func chunkEntry(t *testing.T, seed, n int, rank float64) nic.Entry {
	t.Helper()
	salt, err := matcher.NewSalt([]byte("model-01-rig"), "tenant")
	if err != nil {
		t.Fatal(err)
	}
	toks := tokens(seed, n)
	return nic.Entry{Salt: salt, Key: matcher.ChunkKeyOf(salt, toks), Tokens: toks, Rank: rank}
}

func countMatches(t *testing.T, d nic.Device, prompt []matcher.Token, salt matcher.Salt) int {
	t.Helper()
	ch, err := d.Submit(t.Context(), nic.Request{Salt: salt, Tokens: prompt})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	n := 0
	for ev := range ch {
		switch ev.Kind {
		case nic.EventMatch:
			n++
		case nic.EventError:
			t.Fatalf("request failed: %v", ev.Err)
		}
	}
	return n
}

// TestLoadSimImage: a sim image reconfigures the simulator through
// bitstream's sim loader; the driver follows the new geometry and puts the
// table back, by rank where it no longer fits. Images that are not
// trusted, not for the simulator or not valid change nothing.
func TestLoadSimImage(t *testing.T) {
	key, trust := testutil.ImageKey(t)
	d, err := simnic.New(t.Context(), simnic.Options{Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var upd nic.IndexUpdate
	var prompt []matcher.Token
	for i := range 6 {
		e := chunkEntry(t, i, 64, float64(i))
		upd.Add = append(upd.Add, e)
		prompt = append(prompt, e.Tokens...)
	}
	if err := d.PushIndex(t.Context(), upd); err != nil {
		t.Fatal(err)
	}
	salt := upd.Add[0].Salt
	if n := countMatches(t, d, prompt, salt); n != 6 {
		t.Fatalf("before the load %d entries match, want 6", n)
	}

	m := testutil.ImageManifest(bitstream.KindSim, "kvloom-sim", "1.2.3")
	m.Matcher = bitstream.MatcherParams{AnchorWindow: 64, KGram: 16, MinMatch: 64, BlockTokens: 256, ChunkTokens: 2048, TableCapacity: 4}
	pipe := bitstream.Pipeline{ClockMHz: 300, Lanes: 32, LookupLatencyCycles: 6, RequestQueueDepth: 64, CompletionQueueDepth: 128, PCIeGbps: 128, NetworkGbps: 200}
	m.Params = pipe.Params()
	if err := d.Load(t.Context(), testutil.SignedImage(t, m, key)); err != nil {
		t.Fatalf("load sim image: %v", err)
	}
	info := d.Info()
	if info.Image != "kvloom-sim@1.2.3" || info.TableCapacity != 4 || info.RequestQueueDepth != 64 || info.CompletionQueueDepth != 128 ||
		info.MaxEntryTokens != 2048 || info.LineRateGbps != 200 {
		t.Errorf("after load Info = %+v", info)
	}
	if p := d.Model().Pipeline(); p.Lanes != 32 || p.ClockHz != 300e6 || p.LookupCycles != 6 {
		t.Errorf("pipeline after load: %+v", p)
	}
	id := d.Model().Image().ID
	if g := d.Geometry(); g.ImageVersion != 1<<16|2<<8|3 || g.Epoch < 2 || len(id) < 32 {
		t.Errorf("geometry after load: %+v (image id %q)", g, id)
	}
	// The table came back, the four highest ranks of six.
	if st := d.Stats(); st.TableEntries != 4 {
		t.Errorf("TableEntries after load = %d, want 4 (capacity)", st.TableEntries)
	}
	if n := countMatches(t, d, prompt, salt); n != 4 {
		t.Errorf("after load %d entries match, want the 4 highest-ranked", n)
	}
	if n := countMatches(t, d, upd.Add[5].Tokens, salt); n != 1 {
		t.Errorf("highest-ranked entry matches %d times after load, want 1", n)
	}
	// Counters are cumulative across the load, which cleared the device's.
	if st := d.Stats(); st.Requests != 3 || st.Matches != 6+4+1 || st.TableInserts != 6+4 {
		t.Errorf("stats across the load: requests %d (want 3), matches %d (want 11), inserts %d (want 10)", st.Requests, st.Matches, st.TableInserts)
	}

	// Refused: untrusted, wrong kind, invalid pipeline. Nothing changes.
	other, _ := testutil.ImageKey(t)
	bad := m
	bad.Version = "9.9.9"
	wrongKind := testutil.ImageManifest(bitstream.KindXDP, "kvloom-xdp", "1.0.0")
	badDepth := m
	badDepth.Params = bitstream.Pipeline{ClockMHz: 300, Lanes: 32, LookupLatencyCycles: 6, RequestQueueDepth: 100, CompletionQueueDepth: 128, PCIeGbps: 128, NetworkGbps: 200}.Params()
	for name, c := range map[string]struct {
		img  *bitstream.Image
		want error
	}{
		"untrusted":      {testutil.SignedImage(t, bad, other), bitstream.ErrUntrusted},
		"unsigned":       {testutil.SignedImage(t, bad, nil), bitstream.ErrUnsigned},
		"xdp image":      {testutil.SignedImage(t, wrongKind, key, bitstream.Payload{Name: "prog", Type: bitstream.PayloadEBPF, Data: testutil.BuildBPFObject(t, xdpPassSrc)}), nic.ErrIncompatibleImage},
		"ring not pow 2": {testutil.SignedImage(t, badDepth, key), simnic.ErrConfig},
	} {
		if err := d.Load(t.Context(), c.img); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
		if got := d.Info(); got.Image != "kvloom-sim@1.2.3" || got.RequestQueueDepth != 64 {
			t.Errorf("%s: after a refused load Info = %+v, want the previous image", name, got)
		}
	}
	if n := countMatches(t, d, prompt, salt); n != 4 {
		t.Errorf("after refused loads %d entries match, want 4", n)
	}
}

const xdpPassSrc = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
`

// TestBlankCardRefusesDriver: the driver will not start on a card that has
// no kvloom image.
func TestBlankCardRefusesDriver(t *testing.T) {
	bar, _ := nic.NewRegion(make([]byte, nic.MinBARSize))
	if _, err := simnic.NewModel(bar, simnic.Options{Blank: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := nic.NewDriver(t.Context(), bar, nic.DriverOptions{}); !errors.Is(err, nic.ErrIncompatibleImage) {
		t.Errorf("driver on a blank card: %v, want ErrIncompatibleImage", err)
	}
}

// TestBackend: discovery and open by address.
func TestBackend(t *testing.T) {
	b, err := simnic.NewBackend(simnic.Options{})
	if err != nil {
		t.Fatal(err)
	}
	found, err := b.Discover(t.Context())
	if err != nil || len(found) != 1 || !found[0].Auto || found[0].Address != simnic.Address || found[0].TableCapacity <= 0 || !found[0].Simulated {
		t.Fatalf("discover: %+v, %v", found, err)
	}
	if _, err := b.Open(t.Context(), "elsewhere"); !errors.Is(err, nic.ErrNoDevice) {
		t.Errorf("open another address: %v, want ErrNoDevice", err)
	}
	if _, err := simnic.NewBackend(simnic.Options{BARSize: 100}); !errors.Is(err, simnic.ErrConfig) {
		t.Errorf("backend with a 100-byte BAR: %v, want ErrConfig", err)
	}
}
