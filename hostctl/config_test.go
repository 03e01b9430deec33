package hostctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/sim/tune"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := cfg.SocketPath(); got != "/var/lib/kvloom/kvloomd.sock" {
		t.Errorf("default socket %q", got)
	}
	if got := cfg.TierSpec(); !strings.HasPrefix(got, "mem:") || !strings.Contains(got, "disk:/var/lib/kvloom/chunks:") {
		t.Errorf("default tiers %q: want memory and disk under the data directory", got)
	}
	if cfg.Device.Backend != "sim" {
		t.Errorf("default device %q, want sim", cfg.Device.Backend)
	}
}

func TestEveryFieldDocumented(t *testing.T) {
	var walk func(t *testing.T, rt reflect.Type, path string)
	walk = func(t *testing.T, rt reflect.Type, path string) {
		for rt.Kind() == reflect.Slice || rt.Kind() == reflect.Pointer {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
			return
		}
		for i := range rt.NumField() {
			f := rt.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" {
				t.Errorf("%s%s has no yaml key", path, f.Name)
			}
			if f.Tag.Get("doc") == "" {
				t.Errorf("%s%s has no doc tag", path, name)
			}
			walk(t, f.Type, path+name+".")
		}
	}
	walk(t, reflect.TypeOf(Config{}), "")
	out, err := MarshalConfig(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "# the in-network accelerator\ndevice:") {
		t.Errorf("printed configuration lacks the device section's comment:\n%s", out)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Peers.Static = []string{"10.0.0.2:7070"}
	cfg.Models = []ModelConfig{{Name: "tiny", Preset: "stories260K", KVDType: "bf16"}}
	cfg.Limits.SegmentTTL = 90_000_000_000
	out, err := MarshalConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig("printed.yaml", out)
	if err != nil {
		t.Fatalf("parse printed config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip changed the configuration:\n got %+v\nwant %+v", back, cfg)
	}
}

func TestConfigUnknownKeysWithLines(t *testing.T) {
	src := "version: 1\nchunk_tokenz: 16\nlimits:\n  segment_ttl: 1s\n  segmnt_bytes: 1GiB\n"
	_, err := ParseConfig("kvloomd.yaml", []byte(src))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, want := range []string{`kvloomd.yaml:2: unknown key "chunk_tokenz" (in the top level)`, `kvloomd.yaml:5: unknown key "segmnt_bytes" (in limits)`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestConfigAllProblemsAtOnce(t *testing.T) {
	src := "version: 1\nchunk_tokens: 3\nlimits:\n  segment_ttl: -1s\n  max_inflight: 0\nlog:\n  format: xml\nrecompute: sometimes\n"
	_, err := ParseConfig("c.yaml", []byte(src))
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	var fes []*FieldError
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			fes = append(fes, fe)
		}
	}
	want := map[string]int{"chunk_tokens": 2, "limits.segment_ttl": 4, "limits.max_inflight": 5, "log.format": 7, "recompute": 8}
	got := map[string]int{}
	for _, fe := range fes {
		got[fe.Field] = fe.Line
	}
	for f, line := range want {
		if got[f] != line {
			t.Errorf("field %s: reported at line %d, want %d (all: %v)", f, got[f], line, err)
		}
	}
	if !errors.Is(err, ErrConfig) {
		t.Errorf("err does not wrap ErrConfig: %v", err)
	}
}

func TestConfigBadValues(t *testing.T) {
	for _, tc := range []struct{ name, src, field string }{
		{"version", "version: 2\n", "version"},
		{"device", "device:\n  backend: gpu:0\n", "device.backend"},
		{"socket mode", "listen:\n  socket_mode: rw\n", "listen.socket_mode"},
		{"tcp without tls", "listen:\n  tcp: 0.0.0.0:7070\n", "listen.tcp"},
		{"codec", "codec: zstd\n", "codec"},
		{"model without source", "models:\n  - name: x\n", "models[0]"},
		{"model shadows preset", "models:\n  - name: stories260K\n    preset: stories260K\n", "models[0].name"},
		{"peer", "peers:\n  static: [nowhere]\n", "peers.static[0]"},
		{"dma", "gpu:\n  dma: opencl\n", "gpu.dma"},
		{"min chunk below a k-gram", "min_chunk_tokens: 3\n", "min_chunk_tokens"},
		{"min chunk above the matcher's", "min_chunk_tokens: 65537\n", "min_chunk_tokens"},
		{"min chunk above a prompt", "min_chunk_tokens: 4096\nlimits:\n  max_prompt_tokens: 2048\n", "min_chunk_tokens"},
		{"stream grace", "limits:\n  stream_grace: 0s\n", "limits.stream_grace"},
		{"stream grace past max", "limits:\n  stream_grace: 1m\n", "limits.stream_grace"},
		{"materialize", "control:\n  materialize: -1\n", "control.materialize"},
		{"span chains", "control:\n  span_chains: -1\n", "control.span_chains"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tc.src))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
			if fe.Line == 0 {
				t.Errorf("no line number: %v", fe)
			}
		})
	}
	if _, err := ParseConfig("c.yaml", []byte("limits:\n  segment_bytes: lots\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad size: %v", err)
	}
	if _, err := ParseConfig("c.yaml", []byte("min_chunk_tokens: 3\n")); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("must be %d..%d", matcher.MinAnchorK, matcher.MaxMinLen)) {
		t.Errorf("min_chunk_tokens bound not the matcher's: %v", err)
	}
}

// TestMinChunkTokensFollowsMatcher: every MinLen the matcher takes is a
// valid min_chunk_tokens, and a daemon runs with the largest (the anchor
// window capped at MaxAnchorW, the k-gram at DefaultAnchorK).
func TestMinChunkTokensFollowsMatcher(t *testing.T) {
	f, _ := reflect.TypeFor[Config]().FieldByName("MinChunkTokens")
	if want := fmt.Sprintf("%d..%d", matcher.MinAnchorK, matcher.MaxMinLen); !strings.Contains(f.Tag.Get("doc"), want) {
		t.Errorf("min_chunk_tokens is documented as %q, the matcher takes %s", f.Tag.Get("doc"), want)
	}
	for _, n := range []int{matcher.MinAnchorK, matcher.DefaultAnchorK, matcher.DefaultAnchorK + matcher.MaxAnchorW - 1, 1000, matcher.MaxMinLen} {
		cfg := testConfig(t)
		cfg.MinChunkTokens = n
		if err := cfg.Validate(); err != nil {
			t.Fatalf("min_chunk_tokens %d: %v", n, err)
		}
		if n != matcher.MaxMinLen {
			continue
		}
		d, err := New(t.Context(), cfg, Options{})
		if err != nil {
			t.Fatalf("daemon with min_chunk_tokens %d: %v", n, err)
		}
		if got := d.index.Options().MinLen; got != n {
			t.Errorf("index MinLen %d, want %d", got, n)
		}
		if ap := d.index.AnchorParams(); ap.K != matcher.DefaultAnchorK || ap.W != matcher.MaxAnchorW {
			t.Errorf("anchor parameters %+v, want K=%d W=%d", ap, matcher.DefaultAnchorK, matcher.MaxAnchorW)
		}
		if _, err := d.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfigAcceptsTunerOutput: what `kvloom tune --out` writes
// (sim/tune.DaemonConfig) is a valid kvloomd configuration.
func TestConfigAcceptsTunerOutput(t *testing.T) {
	tc := &tune.DaemonConfig{
		Version:       1,
		Device:        tune.DeviceConfig{Backend: "auto", TableEntries: 8192},
		ChunkTokens:   512,
		PrefetchDepth: 32,
		Tiers:         "mem:24GiB,disk:/var/lib/kvloom:2TiB,redis://10.0.0.9:6379",
		Recompute:     "ratio:0.15",
		Codec:         "cachegen",
		NICMap:        map[string]string{"host0/gpu0": "nic0", "host0/gpu1": "nic1"},
	}
	data, err := tc.Marshal("tuned by kvloom tune\nobjective p99-ttft")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("tuned.yaml", data)
	if err != nil {
		t.Fatalf("kvloomd rejects the tuner's output: %v\n%s", err, data)
	}
	if cfg.Device.Backend != "auto" || cfg.Device.TableEntries != 8192 || cfg.ChunkTokens != 512 || cfg.PrefetchDepth != 32 ||
		cfg.Tiers != tc.Tiers || cfg.Recompute != tc.Recompute || cfg.Codec != "cachegen" || cfg.NICMap["host0/gpu1"] != "nic1" {
		t.Fatalf("tuned values not taken: %+v", cfg)
	}
	// Every key the tuner can write has the same path and kind here.
	var check func(tt, ct reflect.Type, path string)
	check = func(tt, ct reflect.Type, path string) {
		fields := map[string]reflect.StructField{}
		for i := range ct.NumField() {
			fields[strings.Split(ct.Field(i).Tag.Get("yaml"), ",")[0]] = ct.Field(i)
		}
		for i := range tt.NumField() {
			f := tt.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			cf, ok := fields[key]
			if !ok {
				t.Errorf("tuner key %s%s missing from kvloomd's Config", path, key)
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				check(f.Type, cf.Type, path+key+".")
			} else if f.Type.Kind() != cf.Type.Kind() {
				t.Errorf("tuner key %s%s is a %s, kvloomd's a %s", path, key, f.Type.Kind(), cf.Type.Kind())
			}
		}
	}
	check(reflect.TypeOf(tune.DaemonConfig{}), reflect.TypeOf(Config{}), "")
}

func TestFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /from/file\ndevice:\n  backend: none\nlog:\n  level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("kvloomd", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse([]string{"--config", path, "--data-dir", dir, "--peer", "127.0.0.1:1", "--peer", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != dir {
		t.Errorf("data_dir %q: the flag must win over the file", cfg.DataDir)
	}
	if cfg.Device.Backend != "none" || cfg.Log.Level != "debug" {
		t.Errorf("file values lost: device %q, level %q", cfg.Device.Backend, cfg.Log.Level)
	}
	if len(cfg.Peers.Static) != 2 {
		t.Errorf("peers %v", cfg.Peers.Static)
	}
	if cfg.Metrics.Listen != DefaultConfig().Metrics.Listen {
		t.Errorf("an unset flag changed metrics.listen to %q", cfg.Metrics.Listen)
	}
}

func FuzzParseConfig(f *testing.F) {
	def, err := MarshalConfig(DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def)
	f.Add([]byte("version: 1\nchunk_tokens: 64\n"))
	f.Add([]byte("limits: {segment_bytes: 1GiB}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Fatalf("error %v with a non-zero config", err)
			}
			return
		}
		out, err := MarshalConfig(cfg)
		if err != nil {
			t.Fatalf("marshal accepted config: %v", err)
		}
		back, err := ParseConfig("again.yaml", out)
		if err != nil {
			t.Fatalf("printed config does not parse: %v\n%s", err, out)
		}
		var a, b any
		ya, _ := yaml.Marshal(cfg)
		yb, _ := yaml.Marshal(back)
		_ = yaml.Unmarshal(ya, &a)
		_ = yaml.Unmarshal(yb, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the configuration:\n%s\n---\n%s", ya, yb)
		}
	})
}
