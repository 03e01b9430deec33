package hostctl

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/hostctl/api"
)

// TestMetricsPromtool scrapes a busy daemon's /metrics and runs promtool's
// linter on it.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found: install prometheus (apt-get install prometheus): %v", err)
	}
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	lis := tcpListener(t)
	serveExtra(t, func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() { lis.Close() })
		defer stop()
		return dt.d.ServeMetrics(lis)
	})
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	checkExactPrefix(t, dt, m, "acme", toks)
	if _, err := dt.c.Lookup(t.Context(), &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks}); err != nil {
		t.Fatal(err)
	}
	_, _ = dt.c.Lookup(t.Context(), &api.LookupRequest{Tenant: "acme", Model: "nope", Tokens: toks})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+lis.Addr().String()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{
		`kvloom_api_requests_total{code="NotFound",method="Lookup"} 1`,
		`kvloom_api_prepare_duration_seconds_count 1`,
		`kvloom_api_lookup_duration_seconds_count 1`,
		`kvloom_store_tier_hits_total{tier="mem"}`,
		`kvloom_store_bytes_total{direction="write",tier="disk"}`,
		`kvloom_backend_up{backend="device"} 1`,
		`kvloom_writeback_rejects_total 0`,
		`kvloom_reuse_reused_tokens_total{kind="prefix"}`,
		`kvloom_device_table_entries{state="capacity"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(text, "acme") {
		t.Error("a tenant name appears in the metrics")
	}
	cmd := exec.CommandContext(context.Background(), promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
