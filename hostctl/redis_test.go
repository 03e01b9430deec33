package hostctl

import (
	"testing"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
)

// TestRedisTierDeadlineAndOutage: chunks only Redis holds are loaded from
// it (source REDIS); a deadline too short for them gives a partial plan,
// not an error; with Redis gone they are misses, and the daemon says so.
func TestRedisTierDeadlineAndOutage(t *testing.T) {
	m := loadModel260K(t)
	rds := testutil.StartRedis(t)
	cfg := testConfig(t)
	cfg.Tiers = "mem:64MiB," + rds.URL()
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	if _, err := dt.d.st.wb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	salt, err := dt.d.models.salt(mustModel(t, dt.d), "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := matcher.PrefixKeys(salt, toks, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Memory forgets them: only Redis has them now.
	if err := dt.d.st.first.Delete(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	// Paused, Redis answers nothing before the 1 ns deadline (running, it
	// may: a chunk whose first layer is in by then is served).
	rds.Do(t, "CLIENT", "PAUSE", "300", "ALL")
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, DeadlineNs: 1})
	if err != nil {
		t.Fatalf("prepare past its deadline: %v", err)
	}
	if !res.Plan.Partial || res.Plan.ReusedTokens != 0 {
		t.Fatalf("1ns deadline: %v, want a partial plan reusing nothing", res.Plan)
	}
	p := checkExactPrefix(t, dt, m, "acme", toks)
	for _, r := range p.Ranges {
		if r.Source != api.Source_SOURCE_REDIS {
			t.Fatalf("range %v not from Redis", r)
		}
	}
	// Promotion put them back in memory; drop them again and kill Redis.
	if err := dt.d.st.first.Delete(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	rds.Kill(t)
	res, err = PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil {
		t.Fatalf("prepare with Redis down: %v", err)
	}
	if res.Plan.ReusedTokens != 0 || !res.Plan.Partial {
		t.Fatalf("with Redis down: %v", res.Plan)
	}
	st, err := dt.c.Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Backends {
		if b.Name == "tier_redis" && b.Up {
			t.Fatalf("status says Redis is up: %v", b)
		}
	}
	rds.Restart(t)
}

func mustModel(t *testing.T, d *Daemon) *model {
	t.Helper()
	m, err := d.models.get("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	return m
}
