//go:build linux

package xdp

import (
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// testWorld makes salts, tokens and entries for device tests.
type testWorld struct {
	rng  *mrand.Rand
	salt matcher.Salt
	opts matcher.Options
}

func newTestWorld(t testing.TB, seed uint64, opts matcher.Options) *testWorld {
	t.Helper()
	s, err := matcher.NewSalt([]byte("xdp-test-model-1"), "tenant")
	if err != nil {
		t.Fatal(err)
	}
	return &testWorld{rng: mrand.New(mrand.NewPCG(seed, 99)), salt: s, opts: opts}
}

func (w *testWorld) tokens(n int) []matcher.Token {
	out := make([]matcher.Token, n)
	for i := range out {
		out[i] = matcher.Token(w.rng.IntN(1 << 16))
	}
	return out
}

func (w *testWorld) entry(toks []matcher.Token, prefix bool, rank float64) nic.Entry {
	e := nic.Entry{Salt: w.salt, Tokens: toks, Prefix: prefix, Rank: rank}
	e.Key = nic.EntryKey(e, w.opts.BlockSize)
	return e
}

// submit runs a request to the end and returns its matches, prefetches and
// terminal event.
func submit(t testing.TB, d nic.Device, id uint64, salt matcher.Salt, prompt []matcher.Token) ([]matcher.Match, []matcher.ChunkKey, nic.Event) {
	t.Helper()
	ch, err := d.Submit(t.Context(), nic.Request{ID: id, Salt: salt, Tokens: prompt})
	if err != nil {
		t.Fatalf("submit %d: %v", id, err)
	}
	var ms []matcher.Match
	var pf []matcher.ChunkKey
	var last nic.Event
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				if last.Kind != nic.EventDone {
					t.Fatalf("request %d ended with %+v", id, last)
				}
				return ms, pf, last
			}
			switch ev.Kind {
			case nic.EventMatch:
				ms = append(ms, ev.Match)
			case nic.EventPrefetch:
				pf = append(pf, ev.Key)
			}
			last = ev
		case <-timeout:
			t.Fatalf("request %d: no end after 30s", id)
		}
	}
}

// oracle returns matcher.FindAll over entries with opts.
func oracle(t testing.TB, opts matcher.Options, entries []nic.Entry, salt matcher.Salt, prompt []matcher.Token) []matcher.Match {
	t.Helper()
	ix, err := matcher.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := ix.Add(matcher.Entry{Salt: e.Salt, Tokens: e.Tokens, Prefix: e.Prefix}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := ix.FindAll(salt, prompt)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func openDevice(t testing.TB, opts Options) *Device {
	t.Helper()
	requireBPF(t)
	d, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return d
}

func TestOpenRejectsBadOptions(t *testing.T) {
	requireBPF(t)
	for name, o := range map[string]Options{
		"mode without interface":  {Mode: AttachGeneric},
		"netns without interface": {Netns: "/var/run/netns/x"},
		"negative capacity":       {TableCapacity: -1},
		"negative queue":          {RequestQueueDepth: -3},
		"unknown mode":            {Interface: "lo", Mode: 9},
	} {
		if _, err := Open(t.Context(), o); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: err %v, want ErrOptions", name, err)
		}
	}
	if _, err := Open(t.Context(), Options{Interface: "kvl-no-such0"}); !errors.Is(err, nic.ErrNoDevice) {
		t.Errorf("missing interface: err %v, want nic.ErrNoDevice", err)
	}
	for s, want := range map[string]AttachMode{"": AttachAuto, "skb": AttachGeneric, "native": AttachNative, "hw": AttachOffload} {
		if m, err := ParseAttachMode(s); err != nil || m != want {
			t.Errorf("ParseAttachMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseAttachMode("fast"); !errors.Is(err, ErrOptions) {
		t.Errorf("ParseAttachMode(fast): %v", err)
	}
}

// TestPrefetchEvents: every anchor a request hits reaches OnPrefetch from
// the ring buffer, tagged with the request and naming a resident chunk.
func TestPrefetchEvents(t *testing.T) {
	var mu sync.Mutex
	var got []PrefetchEvent
	d := openDevice(t, Options{OnPrefetch: func(ev PrefetchEvent) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}})
	w := newTestWorld(t, 1, d.Info().Matcher)
	a, b := w.entry(w.tokens(300), false, 1), w.entry(w.tokens(200), false, 2)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{a, b}}); err != nil {
		t.Fatal(err)
	}
	prompt := slices.Concat(w.tokens(50), a.Tokens, w.tokens(70), b.Tokens[:150])
	ms, pf, _ := submit(t, d, 77, w.salt, prompt)
	if want := oracle(t, d.Info().Matcher, []nic.Entry{a, b}, w.salt, prompt); !slices.Equal(ms, want) {
		t.Fatalf("matches %+v, oracle %+v", ms, want)
	}
	if !slices.Equal(pf, []matcher.ChunkKey{a.Key, b.Key}) {
		t.Fatalf("prefetches %v, want %v then %v", pf, a.Key, b.Key)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if uint64(n) == c[Events] || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 || uint64(len(got)) != c[Events] || c[Events] != c[Hits] {
		t.Fatalf("%d events delivered; counters: hits %d, events %d", len(got), c[Hits], c[Events])
	}
	for _, ev := range got {
		if ev.RequestID != 77 || (ev.Chunk != a.Key && ev.Chunk != b.Key) || (ev.SaltID != w.salt.ID() && ev.SaltID != w.salt.Shared().ID()) {
			t.Fatalf("event %+v", ev)
		}
		if !slices.Contains(d.Chunks(ev.SaltID, ev.Fingerprint), ev.Chunk) {
			t.Fatalf("Chunks(%#x, %#x) = %v lacks the event's chunk %s", ev.SaltID, ev.Fingerprint, d.Chunks(ev.SaltID, ev.Fingerprint), ev.Chunk)
		}
	}
}

// TestSharedAnchors: two chunks with common content share index keys; the
// map holds one of them, the host resolves both, and removing the one the
// map names hands the key to the other, in the kernel too.
func TestSharedAnchors(t *testing.T) {
	d := openDevice(t, Options{})
	opts := d.Info().Matcher
	w := newTestWorld(t, 2, opts)
	body := w.tokens(400)
	a := w.entry(body[:300], false, 1)
	b := w.entry(body[100:], false, 1)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{a, b}}); err != nil {
		t.Fatal(err)
	}
	// Find a key both chunks hold.
	params := d.cfg.params
	var shared slotKey
	for _, an := range params.Anchors(body[100:300], nil) {
		k := slotKey{w.salt.ID(), an.FP}
		if len(d.Chunks(k.salt, k.fp)) == 2 {
			shared = k
			break
		}
	}
	if shared == (slotKey{}) {
		t.Fatal("the chunks share no anchor: make the overlap longer")
	}
	var v kvlpKvlpValue
	if err := d.prog.index.Lookup(shared.bpf(), &v); err != nil {
		t.Fatal(err)
	}
	first := v.ChunkKey
	if first != a.Key && first != b.Key {
		t.Fatalf("map value names %s", first)
	}
	other := a
	if first == a.Key {
		other = b
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Remove: []matcher.ChunkKey{first}}); err != nil {
		t.Fatal(err)
	}
	if err := d.prog.index.Lookup(shared.bpf(), &v); err != nil {
		t.Fatalf("key gone from the map though %s still holds it: %v", other.Key, err)
	}
	if v.ChunkKey != other.Key {
		t.Fatalf("after removing %s the map names %s, want %s", first, v.ChunkKey, other.Key)
	}
	prompt := slices.Concat(w.tokens(10), body, w.tokens(10))
	ms, _, _ := submit(t, d, 1, w.salt, prompt)
	if want := oracle(t, opts, []nic.Entry{other}, w.salt, prompt); !slices.Equal(ms, want) {
		t.Fatalf("matches %+v, oracle %+v", ms, want)
	}
	// Removing the other empties the map.
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Remove: []matcher.ChunkKey{other.Key}}); err != nil {
		t.Fatal(err)
	}
	var k kvlpKvlpKey
	if d.prog.index.Iterate().Next(&k, &v) {
		t.Fatalf("empty table, map still holds %+v", k)
	}
	if ms, _, _ := submit(t, d, 2, w.salt, prompt); len(ms) != 0 {
		t.Fatalf("empty table matched %+v", ms)
	}
}

// TestIndexSlotCapacity: an entry whose anchors do not fit the map's free
// slots is rejected, not half-stored.
func TestIndexSlotCapacity(t *testing.T) {
	w := newTestWorld(t, 3, matcher.Options{})
	ix, err := matcher.New(matcher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.opts = ix.Options()
	const slots = 40
	tb := newTable(ix.AnchorParams(), w.opts.BlockSize, 100, slots)
	var kept, refused int
	for i := range 10 {
		e := w.entry(w.tokens(200), false, float64(i))
		refs := tb.refsOf(&e)
		if !tb.fits(refs) {
			refused++
			continue
		}
		tb.add(e, refs)
		kept++
	}
	if kept == 0 || refused == 0 || len(tb.slots) > slots {
		t.Fatalf("kept %d, refused %d, %d slots of %d", kept, refused, len(tb.slots), slots)
	}
}

// TestLoadSignedImage loads the program from a signed xdp image: trust is
// enforced, the image's matcher parameters take over, the table moves into
// the new program's map re-anchored, and a failed load leaves the previous
// program live.
func TestLoadSignedImage(t *testing.T) {
	pub, priv, err := bitstream.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(capacity int) bitstream.Manifest {
		return bitstream.Manifest{
			Name: "kvlp-xdp", Version: "1.2.0", Kind: bitstream.KindXDP,
			Matcher: bitstream.MatcherParams{AnchorWindow: 48, KGram: 12, MinMatch: 48, BlockTokens: 64, ChunkTokens: 2048, TableCapacity: capacity},
			Build:   bitstream.BuildInfo{Time: "2026-01-02T03:04:05Z", Tool: "clang (bpf2go); kvloom test", Source: "nic/xdp/bpf/kvlp.c"},
		}
	}
	build := func(m bitstream.Manifest, key []byte) *bitstream.Image {
		t.Helper()
		img, err := bitstream.Build(m, []bitstream.Payload{{Name: "kvlp.o", Type: bitstream.PayloadEBPF, Data: Object()}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	signed := build(manifest(500), priv)

	// The prefetch callback calls back into the device, as the daemon's
	// does; a load must not deadlock with it.
	var dev atomic.Pointer[Device]
	var resolved atomic.Int64
	d := openDevice(t, Options{Trust: bitstream.NewKeyRing(pub), OnPrefetch: func(ev PrefetchEvent) {
		if d := dev.Load(); d != nil && len(d.Chunks(ev.SaltID, ev.Fingerprint)) > 0 {
			resolved.Add(1)
		}
	}})
	dev.Store(d)
	w := newTestWorld(t, 4, d.Info().Matcher)
	var entries []nic.Entry
	for i := range 6 {
		entries = append(entries, w.entry(w.tokens(130+i), false, float64(i)))
	}
	entries = append(entries, w.entry(w.tokens(300), true, 9))
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		t.Fatal(err)
	}
	builtin := d.Info()

	// Unsigned: refused, the built-in program stays.
	if err := d.Load(t.Context(), build(manifest(500), nil)); !errors.Is(err, bitstream.ErrUnsigned) {
		t.Fatalf("unsigned image: err %v, want ErrUnsigned", err)
	}
	if d.Info().Image != builtin.Image {
		t.Fatalf("a refused image changed Info.Image to %q", d.Info().Image)
	}
	// Too small for the table: refused before the switch.
	if err := d.Load(t.Context(), build(manifest(3), priv)); !errors.Is(err, nic.ErrIncompatibleImage) {
		t.Fatalf("image with capacity 3 for 7 entries: err %v, want ErrIncompatibleImage", err)
	}
	if d.Info().Image != builtin.Image {
		t.Fatal("a refused image went live")
	}

	var events sync.WaitGroup
	events.Add(1)
	go func() { // requests in flight while the program is swapped
		defer events.Done()
		for i := range 20 {
			ch, err := d.Submit(t.Context(), nic.Request{ID: uint64(100 + i), Salt: w.salt, Tokens: slices.Concat(entries[0].Tokens, entries[1].Tokens)})
			if err != nil {
				t.Errorf("submit during the load: %v", err)
				return
			}
			for ev := range ch {
				if ev.Kind == nic.EventError {
					t.Errorf("request during the load: %v", ev.Err)
				}
			}
		}
	}()
	if err := d.Load(t.Context(), signed); err != nil {
		t.Fatalf("load signed image: %+v", err)
	}
	events.Wait()
	if resolved.Load() == 0 {
		t.Fatal("the prefetch callback resolved no event")
	}
	info := d.Info()
	if info.Image != "kvlp-xdp@1.2.0" || info.Matcher.MinLen != 48 || info.Matcher.AnchorK != 12 || info.Matcher.BlockSize != 64 ||
		info.TableCapacity != 500 || info.MaxEntryTokens != 2048 {
		t.Fatalf("after the load Info = %+v", info)
	}
	if st := d.Slot().Status(); st.Live == nil || st.Live.ID != signed.ID() {
		t.Fatalf("slot status %v", st)
	}
	// The entries pushed before are found with the image's parameters.
	w.opts = info.Matcher
	prompt := slices.Concat(entries[6].Tokens[:200], w.tokens(5), entries[2].Tokens, w.tokens(3), entries[4].Tokens[10:100])
	ms, _, _ := submit(t, d, 5, w.salt, prompt)
	want := oracle(t, info.Matcher, entries, w.salt, prompt)
	if len(want) < 3 || !slices.Equal(ms, want) {
		t.Fatalf("after the load: matches %+v, oracle %+v", ms, want)
	}

	// Insecure mode admits an unsigned image, and says so in the status.
	d2 := openDevice(t, Options{Insecure: true})
	if err := d2.Load(t.Context(), build(manifest(64), nil)); err != nil {
		t.Fatalf("insecure load of an unsigned image: %v", err)
	}
	if st := d2.Slot().Status(); st.LiveInsecure == "" || d2.Slot().Stats().InsecureAdmitted != 1 {
		t.Fatalf("insecure admission not recorded: %+v", st)
	}
}

// TestCloseWithRequestsInFlight: Close does not wait for a consumer that
// stopped reading; its requests end with ErrClosed where they have room.
func TestCloseWithRequestsInFlight(t *testing.T) {
	requireBPF(t)
	d, err := Open(t.Context(), Options{EventBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWorld(t, 5, d.Info().Matcher)
	var entries []nic.Entry
	var prompt []matcher.Token
	for range 5 {
		e := w.entry(w.tokens(100), false, 1)
		entries = append(entries, e)
		prompt = append(prompt, e.Tokens...)
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		t.Fatal(err)
	}
	ch, err := d.Submit(t.Context(), nic.Request{ID: 1, Salt: w.salt, Tokens: prompt})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a request nobody reads")
	}
	n := 0
	for range ch {
		n++
	}
	if n == 0 || n > 1 {
		t.Fatalf("%d events in a one-slot channel", n)
	}
	if _, err := d.Submit(t.Context(), nic.Request{ID: 2, Salt: w.salt, Tokens: prompt}); !errors.Is(err, nic.ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}
