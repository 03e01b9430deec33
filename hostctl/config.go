package hostctl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// ConfigVersion is the configuration format this build reads and writes.
const ConfigVersion = 1

// Config is kvloomd's whole configuration: one YAML file (docs/operations.md),
// every field with a default, flags on top. The `doc` tags are the
// documentation `kvloomd config default` prints beside each key.
//
// The keys the topology tuner writes (version, device.backend,
// device.table_entries, chunk_tokens, prefetch_depth, tiers, recompute,
// codec, nic_map: sim/tune.DaemonConfig) sit at the same place here, so a
// file from `kvloom tune --out` is a valid configuration.
type Config struct {
	Version        int               `yaml:"version" doc:"configuration format version; must be 1"`
	DataDir        string            `yaml:"data_dir" doc:"directory for the disk tier, the socket and other state"`
	Device         DeviceConfig      `yaml:"device" doc:"the in-network accelerator"`
	ChunkTokens    int               `yaml:"chunk_tokens" doc:"prefix block size in tokens (the matcher's block and the store's unit), 16..1024"`
	MinChunkTokens int               `yaml:"min_chunk_tokens" doc:"shortest position-independent chunk match in tokens (the matcher's MinLen), 4..65536, at most limits.max_prompt_tokens"`
	PrefetchDepth  int               `yaml:"prefetch_depth" doc:"chunk reads one request may have in flight"`
	Tiers          string            `yaml:"tiers" doc:"storage tiers, fastest first: mem:SIZE,disk:PATH:SIZE,redis://HOST:PORT (empty: memory and disk under data_dir)"`
	Recompute      string            `yaml:"recompute" doc:"default recompute policy for non-prefix reuse: none, full, epic:K or ratio:R"`
	Codec          string            `yaml:"codec" doc:"codec of stored KV: raw, fp8, cachegen or cachegen:L"`
	NICMap         map[string]string `yaml:"nic_map,omitempty" doc:"GPU (host/gpu) to the NIC its loads go through, as kvloom tune writes it; empty means nearest"`
	Listen         ListenConfig      `yaml:"listen" doc:"where the gRPC API listens"`
	Metrics        MetricsConfig     `yaml:"metrics" doc:"Prometheus metrics"`
	Log            LogConfig         `yaml:"log" doc:"logging"`
	Limits         LimitsConfig      `yaml:"limits" doc:"bounds on requests, memory and time"`
	Control        ControlConfig     `yaml:"control" doc:"the control loop that keeps the accelerator's table hot"`
	Peers          PeersConfig       `yaml:"peers" doc:"daemons on other hosts, used as a storage tier"`
	GPU            GPUConfig         `yaml:"gpu" doc:"GPU-side DMA of stitched KV"`
	Tenancy        TenancyConfig     `yaml:"tenancy" doc:"tenant isolation"`
	Models         []ModelConfig     `yaml:"models" doc:"models served besides the built-in presets"`
}

// DeviceConfig configures the accelerator.
type DeviceConfig struct {
	Backend        string `yaml:"backend" doc:"auto, sim, fpga, fpga:BDF, xdp:IFACE or none"`
	TableEntries   int    `yaml:"table_entries" doc:"hot entries the control loop keeps on the device (capped by its table)"`
	Required       bool   `yaml:"required" doc:"fail start-up when the device cannot be opened (otherwise serve without it)"`
	SysfsRoot      string `yaml:"sysfs_root" doc:"where sysfs is mounted (FPGA discovery)"`
	XDPMode        string `yaml:"xdp_mode" doc:"XDP attach mode: auto, generic, native or offload"`
	Image          string `yaml:"image,omitempty" doc:"image file loaded onto the device at start-up (empty: keep what it runs)"`
	TrustDir       string `yaml:"trust_dir,omitempty" doc:"directory of trusted image signing keys (*.pub)"`
	InsecureImages bool   `yaml:"insecure_images" doc:"accept unsigned or untrusted images (development only)"`
}

// ListenConfig says where the API listens.
type ListenConfig struct {
	Socket       string `yaml:"socket" doc:"Unix socket path (empty: data_dir/kvloomd.sock; \"off\" disables it)"`
	SocketMode   string `yaml:"socket_mode" doc:"permission bits of the socket, octal"`
	TCP          string `yaml:"tcp,omitempty" doc:"TCP address (host:port) for remote engines and peers; empty: none"`
	TLSCert      string `yaml:"tls_cert,omitempty" doc:"server certificate (PEM) for the TCP listener"`
	TLSKey       string `yaml:"tls_key,omitempty" doc:"server private key (PEM)"`
	ClientCA     string `yaml:"client_ca,omitempty" doc:"CA bundle client certificates must chain to; set, client certificates are required"`
	InsecureTCP  bool   `yaml:"insecure_tcp" doc:"allow the TCP listener without TLS (loopback testing only)"`
	MaxRecvBytes Size   `yaml:"max_recv_bytes" doc:"largest request message"`
	MaxSendBytes Size   `yaml:"max_send_bytes" doc:"largest response message"`
	MaxStreams   int    `yaml:"max_streams" doc:"concurrent streams per connection"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `yaml:"listen" doc:"host:port of the /metrics HTTP listener; empty disables it"`
}

// LogConfig configures logging.
type LogConfig struct {
	Format string `yaml:"format" doc:"text or json"`
	Level  string `yaml:"level" doc:"debug, info, warn or error"`
}

// LimitsConfig bounds everything.
type LimitsConfig struct {
	MaxPromptTokens   int           `yaml:"max_prompt_tokens" doc:"longest prompt any call accepts"`
	MaxInflight       int           `yaml:"max_inflight" doc:"requests in flight over the whole daemon; more are refused (RESOURCE_EXHAUSTED)"`
	TenantInflight    int           `yaml:"tenant_inflight" doc:"requests in flight per tenant"`
	TenantStoredBytes Size          `yaml:"tenant_stored_bytes" doc:"KV bytes one tenant may have stored through this daemon"`
	MaxTenants        int           `yaml:"max_tenants" doc:"distinct tenants tracked for quotas; more are refused"`
	PrepareDeadline   time.Duration `yaml:"prepare_deadline" doc:"default load deadline of Prepare when the request gives none"`
	MaxDeadline       time.Duration `yaml:"max_deadline" doc:"longest load deadline a request may ask for"`
	StreamGrace       time.Duration `yaml:"stream_grace" doc:"how long after the load deadline the later layers of planned chunks may still arrive; a chunk whose layer is not in by then is dropped from the stream and recomputed"`
	StoreBytes        Size          `yaml:"store_bytes" doc:"largest KV one Store call may carry"`
	StoreTimeout      time.Duration `yaml:"store_timeout" doc:"longest a Store stream may take"`
	WritebackBytes    Size          `yaml:"writeback_bytes" doc:"bytes the write-back queue holds before it rejects"`
	SegmentDir        string        `yaml:"segment_dir" doc:"directory of the shared-memory segments Prepare hands out"`
	SegmentBytes      Size          `yaml:"segment_bytes" doc:"bytes of segments alive at once; Prepare beyond it is refused"`
	SegmentTTL        time.Duration `yaml:"segment_ttl" doc:"how long a segment lives unless released"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout" doc:"how long shutdown waits for requests in flight and the write-back flush"`
	MaxMatches        int           `yaml:"max_matches" doc:"chunk matches reported per prompt"`
	MaxIndexEntries   int           `yaml:"max_index_entries" doc:"prefix chains and chunks the index holds; Store beyond it is refused until entries are evicted or pruned"`
}

// ControlConfig configures the control loop.
type ControlConfig struct {
	Interval            time.Duration `yaml:"interval" doc:"how often the hot set is recomputed and pushed"`
	HotCapacity         int           `yaml:"hot_capacity" doc:"items the hot-substring sketch tracks"`
	HotMinCount         float64       `yaml:"hot_min_count" doc:"decayed sightings before a segment counts as hot"`
	HalfLife            time.Duration `yaml:"half_life" doc:"how fast hotness decays"`
	PrefillTokensPerSec float64       `yaml:"prefill_tokens_per_sec" doc:"engine prefill rate used to price recompute; 0 derives it from the model size and gpu.flops"`
	Report              int           `yaml:"report" doc:"hot entries listed in kvloom stats"`
	Materialize         int           `yaml:"materialize" doc:"hot spans found inside stored prompts that one round turns into position-independent chunks; 0 turns it off"`
	SpanChains          int           `yaml:"span_chains" doc:"most recent stored prompts (prefix chains) searched for hot spans to materialise"`
}

// PeersConfig configures the peer tier.
type PeersConfig struct {
	Static       []string      `yaml:"static,omitempty" doc:"peer daemons' TCP addresses (host:port)"`
	Redis        string        `yaml:"redis,omitempty" doc:"Redis URL of the shared directory of daemons (redis://HOST:PORT); empty: static list only"`
	Advertise    string        `yaml:"advertise,omitempty" doc:"address other daemons reach this one at (default: listen.tcp)"`
	Token        string        `yaml:"token,omitempty" doc:"shared secret peers present; empty accepts any caller of the peer service"`
	Timeout      time.Duration `yaml:"timeout" doc:"deadline of one peer call"`
	SyncInterval time.Duration `yaml:"sync_interval" doc:"how often index entries are pulled from peers"`
	SyncBatch    int           `yaml:"sync_batch" doc:"index entries pulled from one peer per round"`
	TLSCA        string        `yaml:"tls_ca,omitempty" doc:"CA that peers' server certificates chain to (empty: plaintext)"`
	TLSCert      string        `yaml:"tls_cert,omitempty" doc:"client certificate presented to peers"`
	TLSKey       string        `yaml:"tls_key,omitempty" doc:"client key presented to peers"`
}

// GPUConfig configures the DMA path.
type GPUConfig struct {
	DMA   string  `yaml:"dma" doc:"DMA backend: auto (CUDA when present, else sim), sim, cuda or off"`
	Flops float64 `yaml:"flops" doc:"GPU throughput assumed when pricing recompute, FLOP/s"`
}

// TenancyConfig configures isolation.
type TenancyConfig struct {
	AllowSharedWrites bool `yaml:"allow_shared_writes" doc:"let Store write content shared by every tenant of a model"`
	TenantFromCert    bool `yaml:"tenant_from_cert" doc:"over TLS, take the tenant from the client certificate's common name and refuse others"`
}

// ModelConfig adds a model to the built-in presets.
type ModelConfig struct {
	Name      string `yaml:"name" doc:"name requests use"`
	Preset    string `yaml:"preset,omitempty" doc:"a built-in preset"`
	HFConfig  string `yaml:"hf_config,omitempty" doc:"a Hugging Face config.json (needs weights_id)"`
	GGUF      string `yaml:"gguf,omitempty" doc:"a GGUF file"`
	Llama2C   string `yaml:"llama2c,omitempty" doc:"a llama2.c checkpoint"`
	WeightsID string `yaml:"weights_id,omitempty" doc:"identity of the trained weights (hf:org/model@rev)"`
	KVDType   string `yaml:"kv_dtype,omitempty" doc:"KV cache dtype: f32, f16, bf16, fp8-e4m3"`
}

// DefaultConfig is the configuration with no file: the simulator device,
// memory and disk tiers under /var/lib/kvloom, the API on a Unix socket.
func DefaultConfig() Config {
	return Config{
		Version:        ConfigVersion,
		DataDir:        "/var/lib/kvloom",
		Device:         DeviceConfig{Backend: "sim", TableEntries: 1024, SysfsRoot: "/sys", XDPMode: "auto"},
		ChunkTokens:    matcher.DefaultBlockSize,
		MinChunkTokens: matcher.DefaultMinLen,
		PrefetchDepth:  16,
		Recompute:      "ratio:0.15",
		Codec:          "raw",
		Listen: ListenConfig{
			SocketMode:   "0660",
			MaxRecvBytes: 64 << 20,
			MaxSendBytes: 64 << 20,
			MaxStreams:   256,
		},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9464"},
		Log:     LogConfig{Format: "text", Level: "info"},
		Limits: LimitsConfig{
			MaxPromptTokens:   128 << 10,
			MaxInflight:       512,
			TenantInflight:    128,
			TenantStoredBytes: 64 << 30,
			MaxTenants:        4096,
			PrepareDeadline:   2 * time.Second,
			MaxDeadline:       30 * time.Second,
			StreamGrace:       2 * time.Second,
			StoreBytes:        2 << 30,
			StoreTimeout:      60 * time.Second,
			WritebackBytes:    1 << 30,
			SegmentDir:        "/dev/shm",
			SegmentBytes:      8 << 30,
			SegmentTTL:        60 * time.Second,
			ShutdownTimeout:   30 * time.Second,
			MaxMatches:        matcher.DefaultMaxMatches,
			MaxIndexEntries:   1 << 20,
		},
		Control: ControlConfig{
			Interval:    time.Second,
			HotCapacity: 4096,
			HotMinCount: 3,
			HalfLife:    10 * time.Minute,
			Report:      20,
			Materialize: 4,
			SpanChains:  4096,
		},
		Peers: PeersConfig{Timeout: 2 * time.Second, SyncInterval: time.Second, SyncBatch: 4096},
		GPU:   GPUConfig{DMA: "auto", Flops: 400e12},
	}
}

// SocketPath is the Unix socket the API listens on, "" when disabled.
func (c *Config) SocketPath() string {
	switch c.Listen.Socket {
	case "off":
		return ""
	case "":
		return filepath.Join(c.DataDir, "kvloomd.sock")
	}
	return c.Listen.Socket
}

// TierSpec is the tier list in effect: Tiers, or memory and disk under
// DataDir.
func (c *Config) TierSpec() string {
	if c.Tiers != "" {
		return c.Tiers
	}
	return "mem:1GiB,disk:" + filepath.Join(c.DataDir, "chunks") + ":16GiB"
}

// LoadConfig reads a configuration file over the defaults. Unknown keys are
// rejected with the file and line; every problem is reported at once.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

var yamlLine = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)

// ParseConfig decodes a configuration over the defaults and validates it.
// name is the file name used in messages.
func ParseConfig(name string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, cfg.Validate()
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, ErrConfig)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// Decoding over the defaults keeps every key the file leaves out.
	if err := dec.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return Config{}, fmt.Errorf("%s: %v: %w", name, err, ErrConfig)
		}
		var errs []error
		for _, e := range te.Errors {
			if m := yamlLine.FindStringSubmatch(e); m != nil {
				errs = append(errs, fmt.Errorf("%s:%s: unknown key %q (in %s): %w", name, m[1], m[2], yamlSection(m[3]), ErrConfig))
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %s: %w", name, strings.TrimPrefix(e, "yaml: "), ErrConfig))
		}
		return Config{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, annotateLines(name, &doc, err)
	}
	return cfg, nil
}

// yamlSection names the config section a Go type stands for.
func yamlSection(goType string) string {
	t := strings.TrimPrefix(goType, "hostctl.")
	if t == "Config" {
		return "the top level"
	}
	rt := reflect.TypeOf(Config{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Name() == t {
			return strings.Split(f.Tag.Get("yaml"), ",")[0]
		}
	}
	return t
}

// FieldError is one invalid configuration value.
type FieldError struct {
	Field  string // dotted YAML path, e.g. "limits.segment_ttl"
	Value  any
	Reason string
	Line   int // in the file, when known
	File   string
}

func (e *FieldError) Error() string {
	loc := ""
	if e.File != "" {
		loc = e.File
		if e.Line > 0 {
			loc += ":" + strconv.Itoa(e.Line)
		}
		loc += ": "
	}
	return fmt.Sprintf("%s%s: %s (got %v)", loc, e.Field, e.Reason, e.Value)
}

// Is makes a FieldError match ErrConfig.
func (e *FieldError) Is(target error) bool { return target == ErrConfig }

// annotateLines adds the file and line of each field error.
func annotateLines(name string, doc *yaml.Node, err error) error {
	var errs []error
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			fe.File = name
			fe.Line = lineOf(doc, fe.Field)
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// lineOf finds the line of a dotted key path in a YAML document, 0 if the
// file does not set it.
func lineOf(doc *yaml.Node, path string) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, part := range strings.Split(path, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		found := false
		if n.Kind != yaml.MappingNode {
			return 0
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return 0
		}
		if hasIdx {
			k, err := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			if err != nil || n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return n.Line
			}
			n = n.Content[k]
		}
	}
	return n.Line
}

// Validate reports every invalid field at once (errors.Join of
// *FieldError).
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, v any, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: v, Reason: reason})
	}
	if c.Version != ConfigVersion {
		bad("version", c.Version, fmt.Sprintf("this build reads version %d", ConfigVersion))
	}
	if c.DataDir == "" {
		bad("data_dir", `""`, "must name a directory")
	}
	if c.Device.Backend != "none" {
		sp, err := nic.ParseSpec(c.Device.Backend)
		if err != nil || (!sp.Auto && sp.Kind != nic.KindSim && sp.Kind != nic.KindFPGA && sp.Kind != nic.KindXDP) {
			bad("device.backend", c.Device.Backend, "must be auto, sim, fpga[:BDF], xdp:IFACE or none")
		}
	}
	if c.Device.TableEntries < 0 {
		bad("device.table_entries", c.Device.TableEntries, "must be at least 0")
	}
	switch c.Device.XDPMode {
	case "auto", "generic", "skb", "native", "drv", "offload", "hw":
	default:
		bad("device.xdp_mode", c.Device.XDPMode, "must be auto, generic, native or offload")
	}
	if err := matcher.CheckBlockSize(c.ChunkTokens); err != nil {
		bad("chunk_tokens", c.ChunkTokens, fmt.Sprintf("must be %d..%d", matcher.MinBlockSize, matcher.MaxBlockSize))
	}
	// The matcher decides what a chunk match may be (MinAnchorK..MaxMinLen);
	// a chunk can be no longer than a prompt.
	if c.MinChunkTokens < matcher.MinAnchorK || c.MinChunkTokens > matcher.MaxMinLen {
		bad("min_chunk_tokens", c.MinChunkTokens, fmt.Sprintf("must be %d..%d", matcher.MinAnchorK, matcher.MaxMinLen))
	} else if c.MinChunkTokens > c.Limits.MaxPromptTokens && c.Limits.MaxPromptTokens > 0 {
		bad("min_chunk_tokens", c.MinChunkTokens, fmt.Sprintf("must not exceed limits.max_prompt_tokens (%d)", c.Limits.MaxPromptTokens))
	} else if _, err := matcher.New(matcher.Options{MinLen: c.MinChunkTokens, BlockSize: max(c.ChunkTokens, matcher.MinBlockSize)}); err != nil {
		bad("min_chunk_tokens", c.MinChunkTokens, err.Error())
	}
	if c.PrefetchDepth < 1 || c.PrefetchDepth > 4096 {
		bad("prefetch_depth", c.PrefetchDepth, "must be 1..4096")
	}
	if _, err := kvcache.ParsePolicy(c.Recompute); err != nil {
		bad("recompute", c.Recompute, "must be none, full, epic:K or ratio:R")
	}
	if _, err := codecByName(c.Codec); err != nil {
		bad("codec", c.Codec, "must be raw, fp8, cachegen or cachegen:1..4")
	}
	if c.SocketPath() == "" && c.Listen.TCP == "" {
		bad("listen", "socket off, no tcp", "the API needs a Unix socket or a TCP address")
	}
	if m, err := strconv.ParseUint(c.Listen.SocketMode, 8, 32); err != nil || m > 0o777 {
		bad("listen.socket_mode", c.Listen.SocketMode, "must be octal permission bits like 0660")
	}
	if c.Listen.TCP != "" && !c.Listen.InsecureTCP && (c.Listen.TLSCert == "" || c.Listen.TLSKey == "") {
		bad("listen.tcp", c.Listen.TCP, "needs listen.tls_cert and listen.tls_key (or listen.insecure_tcp for loopback tests)")
	}
	if (c.Listen.TLSCert == "") != (c.Listen.TLSKey == "") {
		bad("listen.tls_key", c.Listen.TLSKey, "tls_cert and tls_key go together")
	}
	if c.Listen.ClientCA != "" && c.Listen.TLSCert == "" {
		bad("listen.client_ca", c.Listen.ClientCA, "client certificates need a TLS listener")
	}
	if c.Listen.MaxRecvBytes < 4<<10 {
		bad("listen.max_recv_bytes", c.Listen.MaxRecvBytes, "must be at least 4KiB")
	}
	if c.Listen.MaxSendBytes < 4<<10 {
		bad("listen.max_send_bytes", c.Listen.MaxSendBytes, "must be at least 4KiB")
	}
	if c.Listen.MaxStreams < 1 {
		bad("listen.max_streams", c.Listen.MaxStreams, "must be at least 1")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", c.Log.Format, "must be text or json")
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	l := &c.Limits
	positive := []struct {
		name string
		v    int64
	}{
		{"limits.max_prompt_tokens", int64(l.MaxPromptTokens)},
		{"limits.max_inflight", int64(l.MaxInflight)},
		{"limits.tenant_inflight", int64(l.TenantInflight)},
		{"limits.tenant_stored_bytes", int64(l.TenantStoredBytes)},
		{"limits.max_tenants", int64(l.MaxTenants)},
		{"limits.prepare_deadline", int64(l.PrepareDeadline)},
		{"limits.max_deadline", int64(l.MaxDeadline)},
		{"limits.stream_grace", int64(l.StreamGrace)},
		{"limits.store_bytes", int64(l.StoreBytes)},
		{"limits.store_timeout", int64(l.StoreTimeout)},
		{"limits.writeback_bytes", int64(l.WritebackBytes)},
		{"limits.segment_bytes", int64(l.SegmentBytes)},
		{"limits.segment_ttl", int64(l.SegmentTTL)},
		{"limits.shutdown_timeout", int64(l.ShutdownTimeout)},
		{"limits.max_matches", int64(l.MaxMatches)},
		{"limits.max_index_entries", int64(l.MaxIndexEntries)},
		{"control.interval", int64(c.Control.Interval)},
		{"control.hot_capacity", int64(c.Control.HotCapacity)},
		{"control.half_life", int64(c.Control.HalfLife)},
		{"peers.timeout", int64(c.Peers.Timeout)},
		{"peers.sync_interval", int64(c.Peers.SyncInterval)},
		{"peers.sync_batch", int64(c.Peers.SyncBatch)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.name, p.v, "must be positive")
		}
	}
	if l.MaxPromptTokens > matcher.MaxMaxPromptLen {
		bad("limits.max_prompt_tokens", l.MaxPromptTokens, fmt.Sprintf("must be at most %d", matcher.MaxMaxPromptLen))
	}
	if l.TenantInflight > l.MaxInflight {
		bad("limits.tenant_inflight", l.TenantInflight, "must not exceed limits.max_inflight")
	}
	if l.PrepareDeadline > l.MaxDeadline {
		bad("limits.prepare_deadline", l.PrepareDeadline, "must not exceed limits.max_deadline")
	}
	if l.StreamGrace > l.MaxDeadline {
		bad("limits.stream_grace", l.StreamGrace, "must not exceed limits.max_deadline")
	}
	if l.SegmentDir == "" {
		bad("limits.segment_dir", `""`, "must name a directory (a tmpfs such as /dev/shm)")
	}
	if c.Control.HotMinCount < 1 {
		bad("control.hot_min_count", c.Control.HotMinCount, "must be at least 1")
	}
	if c.Control.PrefillTokensPerSec < 0 {
		bad("control.prefill_tokens_per_sec", c.Control.PrefillTokensPerSec, "must be 0 (derive) or positive")
	}
	if c.Control.Report < 0 || c.Control.Report > 1000 {
		bad("control.report", c.Control.Report, "must be 0..1000")
	}
	if c.Control.Materialize < 0 || c.Control.Materialize > 1024 {
		bad("control.materialize", c.Control.Materialize, "must be 0..1024")
	}
	if c.Control.SpanChains < 0 || c.Control.SpanChains > 1<<20 {
		bad("control.span_chains", c.Control.SpanChains, "must be 0..1048576")
	}
	for i, p := range c.Peers.Static {
		if !strings.Contains(p, ":") {
			bad(fmt.Sprintf("peers.static[%d]", i), p, "must be host:port")
		}
	}
	if c.Peers.Redis != "" && !strings.HasPrefix(c.Peers.Redis, "redis://") && !strings.HasPrefix(c.Peers.Redis, "rediss://") {
		bad("peers.redis", c.Peers.Redis, "must be a redis:// URL")
	}
	if (c.Peers.TLSCert == "") != (c.Peers.TLSKey == "") {
		bad("peers.tls_key", c.Peers.TLSKey, "tls_cert and tls_key go together")
	}
	switch c.GPU.DMA {
	case "auto", "sim", "cuda", "off":
	default:
		bad("gpu.dma", c.GPU.DMA, "must be auto, sim, cuda or off")
	}
	if c.GPU.Flops <= 0 {
		bad("gpu.flops", c.GPU.Flops, "must be positive")
	}
	names := map[string]bool{}
	for _, p := range kvcache.PresetNames() {
		names[strings.ToLower(p)] = true
	}
	for i, m := range c.Models {
		f := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			bad(f+".name", `""`, "every model needs a name")
		} else if names[strings.ToLower(m.Name)] {
			bad(f+".name", m.Name, "names a built-in preset or an earlier model")
		}
		names[strings.ToLower(m.Name)] = true
		srcs := 0
		for _, s := range []string{m.Preset, m.HFConfig, m.GGUF, m.Llama2C} {
			if s != "" {
				srcs++
			}
		}
		if srcs != 1 {
			bad(f, m.Name, "needs exactly one of preset, hf_config, gguf, llama2c")
		}
		if m.HFConfig != "" && m.WeightsID == "" {
			bad(f+".weights_id", `""`, "hf_config needs weights_id")
		}
		if m.KVDType != "" {
			if _, err := kvcache.ParseDType(m.KVDType); err != nil {
				bad(f+".kv_dtype", m.KVDType, "must be f32, f16, bf16 or fp8-e4m3")
			}
		}
	}
	return errors.Join(errs...)
}

// codecByName resolves a configured codec name.
func codecByName(name string) (kvcache.Codec, error) {
	switch {
	case name == "raw":
		return kvcache.Raw{}, nil
	case name == "fp8":
		return kvcache.FP8{}, nil
	case name == "cachegen":
		return kvcache.NewCacheGen(2)
	case strings.HasPrefix(name, "cachegen:"):
		return kvcache.ParseCacheGen(name)
	}
	return nil, fmt.Errorf("codec %q: %w", name, ErrConfig)
}
