package hostctl

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
)

// startTCPDaemon runs a daemon whose API also listens on loopback TCP
// (without TLS), as a peer.
func startTCPDaemon(t *testing.T, cfg Config) (*daemonT, string) {
	t.Helper()
	lis := tcpListener(t)
	addr := lis.Addr().String()
	cfg.Listen.TCP = addr
	cfg.Listen.InsecureTCP = true
	dt := startDaemon(t, cfg)
	serveExtra(t, func(ctx context.Context) error { return dt.d.ServeTLS(ctx, lis) })
	return dt, addr
}

// TestPeerLoad: two daemons on loopback; one stores a prompt, the other
// learns its index entries and loads the KV from it, exact, and writes it
// into its own tiers (bounded, never blocking Prepare), so that its next
// Prepare of the prompt is a local hit.
func TestPeerLoad(t *testing.T) {
	m := loadModel260K(t)
	cfgA := testConfig(t)
	cfgA.Peers.Token = "s3cret"
	a, addrA := startTCPDaemon(t, cfgA)
	cfgB := testConfig(t)
	cfgB.Peers.Token = "s3cret"
	cfgB.Peers.Static = []string{addrA}
	b, _ := startTCPDaemon(t, cfgB)

	toks := m.prompt(story)
	storePrompt(t, a.c, m, "acme", toks)
	ctx := t.Context()
	var lk *api.LookupResponse
	testutil.Eventually(t, "daemon B to learn A's entries", func() bool {
		var err error
		if lk, err = b.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks}); err != nil {
			t.Fatal(err)
		}
		return lk.ReusableTokens > 0
	})
	if lk.ReusableTokens != int32(len(toks)/16*16) || lk.Ranges[0].Source != api.Source_SOURCE_PEER || lk.Ranges[0].Where != addrA {
		t.Fatalf("daemon B's lookup: %v", lk)
	}
	// A answers a peer's HasChunks for what it holds and what it does not.
	var ask []string
	for _, r := range lk.Ranges {
		ask = append(ask, r.Chunk)
	}
	ask = append(ask, matcher.ChunkKey{}.String())
	conn, err := b.d.peers.conn(addrA)
	if err != nil {
		t.Fatal(err)
	}
	has, err := api.NewPeerClient(conn).HasChunks(b.d.peers.outgoing(ctx), &api.HasChunksRequest{Chunks: ask})
	if err != nil || len(has.Has) != len(ask) || slices.Contains(has.Has[:len(ask)-1], false) || has.Has[len(ask)-1] {
		t.Fatalf("HasChunks(%q) from A: %v %v", ask, has, err)
	}
	p := checkExactPrefix(t, b, m, "acme", toks)
	for _, r := range p.Ranges {
		if r.Source != api.Source_SOURCE_PEER {
			t.Fatalf("range %v not loaded from the peer", r)
		}
	}
	// B wrote what it fetched into its own tiers through its write-back
	// queue: the next Prepare of the prompt is a local hit.
	blocks := uint64(len(toks) / 16)
	testutil.Eventually(t, "the peer's chunks offered to the local tiers", func() bool { return b.d.Stats().PeerPromotions == blocks })
	if _, err := b.d.st.wb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p = checkExactPrefix(t, b, m, "acme", toks)
	for _, r := range p.Ranges {
		if r.Source != api.Source_SOURCE_MEMORY {
			t.Fatalf("range %v not served from B's memory tier after the promotion", r)
		}
	}
	if n := counterValue(t, b.d.m.peerPromotions.WithLabelValues("queued")); n != float64(blocks) {
		t.Fatalf("kvloom_peer_promotions_total{result=queued} = %v, want %d", n, blocks)
	}
	// A daemon whose write-back queue is full refuses the promotions and
	// still serves the prompt from the peer, every time.
	cfgC := testConfig(t)
	cfgC.Peers.Token = "s3cret"
	cfgC.Peers.Static = []string{addrA}
	cfgC.Limits.WritebackBytes = 1
	c, _ := startTCPDaemon(t, cfgC)
	testutil.Eventually(t, "daemon C to learn A's entries", func() bool {
		lk, err := c.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
		return err == nil && lk.ReusableTokens > 0
	})
	for range 2 {
		p := checkExactPrefix(t, c, m, "acme", toks)
		for _, r := range p.Ranges {
			if r.Source != api.Source_SOURCE_PEER {
				t.Fatalf("daemon C: range %v not from the peer", r)
			}
		}
	}
	testutil.Eventually(t, "C's refusals counted", func() bool { return c.d.Stats().PeerPromotionRejects == 2*blocks })
	if st := c.d.Stats(); st.PeerPromotions != 0 {
		t.Fatalf("daemon C promoted %d chunks through a full queue", st.PeerPromotions)
	}
	// Other tenants still see nothing, on either daemon.
	lk, err = b.c.Lookup(ctx, &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: toks})
	if err != nil || lk.ReusableTokens != 0 {
		t.Fatalf("globex on B: %v %v", lk, err)
	}
}

func TestPeerTokenRequired(t *testing.T) {
	cfg := testConfig(t)
	cfg.Peers.Token = "s3cret"
	_, addr := startTCPDaemon(t, cfg)
	conn, err := Dial(addr, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = api.NewPeerClient(conn).Sync(t.Context(), &api.SyncRequest{})
	wantCode(t, err, codes.PermissionDenied, "peer token")
}
