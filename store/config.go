package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// TierKind names a kind of tier in a specification.
type TierKind string

// The tier kinds Parse accepts.
const (
	KindMemory       TierKind = "mem"
	KindDisk         TierKind = "disk"
	KindRedis        TierKind = "redis"
	KindRedisCluster TierKind = "redis-cluster"
)

// TierConfig is one parsed tier of a specification.
type TierConfig struct {
	Kind TierKind
	// Capacity is the byte budget (mem, disk).
	Capacity int64
	// Policy is the memory tier's replacement policy ("" = default).
	Policy string
	// Path is the disk tier's directory.
	Path string
	// AdmitAfter and PackBytes are the disk tier's options (0 = default).
	AdmitAfter int
	PackBytes  int64
	// URL is the go-redis URL (redis, redis-cluster), kvloom's own query
	// options removed.
	URL string
	// Prefix, TTL and MinTransfer are the Redis tier's options.
	Prefix      string
	TTL         time.Duration
	MinTransfer int64
}

// Config is a parsed tier specification, fastest tier first.
type Config struct {
	Tiers []TierConfig
}

// Parse reads a tier specification: tiers separated by commas, fastest
// first, each one of
//
//	mem:SIZE[:policy=NAME]
//	disk:PATH:SIZE[:admit=N][:pack=SIZE]
//	redis://[user:pass@]host:port[/db][?ttl=DUR&prefix=P&min_transfer=SIZE&<go-redis options>]
//	rediss://…  (TLS)
//	redis-cluster://host:port[?addr=host:port&addr=…&ttl=…]
//
// SIZE takes units (8GiB, 200GB, 512MiB). For example
// "mem:8GiB,disk:/var/lib/kvloom:200GiB,redis://127.0.0.1:6379". Every
// problem is reported, each naming the tier's position and text (errors
// wrap ErrConfig).
func Parse(spec string) (Config, error) {
	var cfg Config
	var errs []error
	if strings.TrimSpace(spec) == "" {
		return Config{}, fmt.Errorf("tier spec is empty: want e.g. mem:8GiB,disk:/var/lib/kvloom:200GiB,redis://127.0.0.1:6379: %w", ErrConfig)
	}
	seen := map[TierKind]int{}
	for i, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		tc, err := parseTier(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("tier %d %q: %w", i+1, item, err))
			continue
		}
		kind := tc.Kind
		if kind == KindRedisCluster {
			kind = KindRedis
		}
		if prev, dup := seen[kind]; dup && kind != KindDisk {
			errs = append(errs, fmt.Errorf("tier %d %q: a second %s tier (the first is tier %d)", i+1, item, tc.Kind, prev))
			continue
		}
		seen[kind] = i + 1
		cfg.Tiers = append(cfg.Tiers, tc)
	}
	if len(cfg.Tiers)+len(errs) > MaxTiers {
		errs = append(errs, fmt.Errorf("%d tiers, at most %d", len(cfg.Tiers)+len(errs), MaxTiers))
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("tier spec: %w: %w", ErrConfig, errors.Join(errs...))
	}
	return cfg, nil
}

func parseTier(item string) (TierConfig, error) {
	switch {
	case item == "":
		return TierConfig{}, errors.New("empty tier (two commas in a row?)")
	case strings.HasPrefix(item, "mem:"):
		return parseMem(strings.TrimPrefix(item, "mem:"))
	case strings.HasPrefix(item, "disk:"):
		return parseDisk(strings.TrimPrefix(item, "disk:"))
	case strings.HasPrefix(item, "redis://"), strings.HasPrefix(item, "rediss://"):
		return parseRedis(item, KindRedis)
	case strings.HasPrefix(item, "redis-cluster://"):
		return parseRedis("redis://"+strings.TrimPrefix(item, "redis-cluster://"), KindRedisCluster)
	}
	return TierConfig{}, errors.New("unknown tier kind: want mem:SIZE, disk:PATH:SIZE, redis://HOST:PORT or redis-cluster://HOST:PORT?addr=…")
}

func parseMem(rest string) (TierConfig, error) {
	parts := strings.Split(rest, ":")
	tc := TierConfig{Kind: KindMemory}
	size, err := parseCapacity(parts[0])
	if err != nil {
		return TierConfig{}, err
	}
	tc.Capacity = size
	for _, opt := range parts[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "policy":
			if v == "" {
				return TierConfig{}, errors.New("policy= needs a name")
			}
			tc.Policy = v
		default:
			return TierConfig{}, fmt.Errorf("unknown option %q: mem takes policy=NAME", opt)
		}
	}
	return tc, nil
}

func parseDisk(rest string) (TierConfig, error) {
	parts := strings.Split(rest, ":")
	// PATH:SIZE[:opt…]; the size is the last part without "=" (options
	// all have one), so a path may hold colons.
	sizeAt := -1
	for i := 1; i < len(parts); i++ {
		if !strings.Contains(parts[i], "=") {
			sizeAt = i
		}
	}
	if sizeAt < 1 || parts[0] == "" {
		return TierConfig{}, errors.New("want disk:PATH:SIZE (for example disk:/var/lib/kvloom:200GiB)")
	}
	tc := TierConfig{Kind: KindDisk, Path: strings.Join(parts[:sizeAt], ":")}
	size, err := parseCapacity(parts[sizeAt])
	if err != nil {
		return TierConfig{}, err
	}
	tc.Capacity = size
	for _, opt := range parts[sizeAt+1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "admit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 15 {
				return TierConfig{}, fmt.Errorf("admit=%q: want a count 0..15", v)
			}
			tc.AdmitAfter = n
		case "pack":
			n, err := parseCapacity(v)
			if err != nil {
				return TierConfig{}, fmt.Errorf("pack=%q: %w", v, err)
			}
			tc.PackBytes = n
		default:
			return TierConfig{}, fmt.Errorf("unknown option %q: disk takes admit=N and pack=SIZE", opt)
		}
	}
	return tc, nil
}

func parseRedis(raw string, kind TierKind) (TierConfig, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return TierConfig{}, fmt.Errorf("url: %v", err)
	}
	if u.Host == "" {
		return TierConfig{}, errors.New("url has no host:port")
	}
	tc := TierConfig{Kind: kind}
	q := u.Query()
	if v := q.Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return TierConfig{}, fmt.Errorf("ttl=%q: want a duration such as 1h", v)
		}
		tc.TTL = d
	}
	if v := q.Get("min_transfer"); v != "" {
		n, err := parseCapacity(v)
		if err != nil {
			return TierConfig{}, fmt.Errorf("min_transfer=%q: %w", v, err)
		}
		tc.MinTransfer = n
	}
	if q.Has("prefix") {
		tc.Prefix = q.Get("prefix")
		if tc.Prefix == "" || strings.ContainsAny(tc.Prefix, "{} ") {
			return TierConfig{}, fmt.Errorf("prefix=%q: want a non-empty name without braces or spaces", tc.Prefix)
		}
	}
	for _, k := range []string{"ttl", "min_transfer", "prefix"} {
		q.Del(k)
	}
	u.RawQuery = q.Encode()
	tc.URL = u.String()
	return tc, nil
}

func parseCapacity(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("size is empty: want e.g. 8GiB")
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return 0, fmt.Errorf("size %q: want a number with a unit such as 8GiB or 200GB", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: want > 0", s)
	}
	return int64(n), nil
}

// sizeString renders a byte size as parseCapacity reads it ("8GiB").
func sizeString(n int64) string { return strings.ReplaceAll(humanize.IBytes(uint64(n)), " ", "") }

// String renders the configuration in Parse's syntax.
func (c Config) String() string {
	var parts []string
	for _, t := range c.Tiers {
		switch t.Kind {
		case KindMemory:
			s := "mem:" + sizeString(t.Capacity)
			if t.Policy != "" {
				s += ":policy=" + t.Policy
			}
			parts = append(parts, s)
		case KindDisk:
			s := "disk:" + t.Path + ":" + sizeString(t.Capacity)
			if t.AdmitAfter > 0 {
				s += ":admit=" + strconv.Itoa(t.AdmitAfter)
			}
			if t.PackBytes > 0 {
				s += ":pack=" + sizeString(t.PackBytes)
			}
			parts = append(parts, s)
		default:
			u, err := url.Parse(t.URL)
			if err != nil {
				parts = append(parts, t.URL)
				continue
			}
			q := u.Query()
			if t.TTL > 0 {
				q.Set("ttl", t.TTL.String())
			}
			if t.Prefix != "" {
				q.Set("prefix", t.Prefix)
			}
			if t.MinTransfer > 0 {
				q.Set("min_transfer", strconv.FormatInt(t.MinTransfer, 10))
			}
			u.RawQuery = q.Encode()
			s := u.Redacted()
			if t.Kind == KindRedisCluster {
				s = "redis-cluster://" + strings.TrimPrefix(s, "redis://")
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ",")
}

// OpenOptions configure Open. The zero value of every field selects its
// default.
type OpenOptions struct {
	// BlobOptions apply to every tier.
	BlobOptions
	// Tiered configures the stack (its BlobOptions are replaced by the
	// ones above).
	Tiered TieredOptions
	// LeaseTTL is the memory tier's (see MemoryOptions).
	LeaseTTL time.Duration
	// Logger is handed to every tier; nil discards.
	Logger *slog.Logger
}

// Open opens every tier of cfg and stacks them. If a tier fails to open,
// the ones already open are closed and the error names the tier.
func Open(ctx context.Context, cfg Config, opts OpenOptions) (*Tiered, error) {
	if len(cfg.Tiers) == 0 {
		return nil, fmt.Errorf("open store: no tiers: %w", ErrConfig)
	}
	var tiers []BlobStore
	fail := func(err error) (*Tiered, error) {
		for _, t := range tiers {
			t.Close()
		}
		return nil, err
	}
	for i, tc := range cfg.Tiers {
		var s BlobStore
		var err error
		switch tc.Kind {
		case KindMemory:
			s, err = NewMemory(MemoryOptions{BlobOptions: opts.BlobOptions, Capacity: tc.Capacity, Policy: tc.Policy, LeaseTTL: opts.LeaseTTL, Logger: opts.Logger})
		case KindDisk:
			s, err = OpenDisk(ctx, DiskOptions{BlobOptions: opts.BlobOptions, Dir: tc.Path, Capacity: tc.Capacity, PackBytes: tc.PackBytes, AdmitAfter: tc.AdmitAfter, Logger: opts.Logger})
		case KindRedis, KindRedisCluster:
			ro := RedisOptions{BlobOptions: opts.BlobOptions, Prefix: tc.Prefix, TTL: tc.TTL, MinTransfer: tc.MinTransfer, Logger: opts.Logger}
			if tc.Kind == KindRedis {
				ro.URL = tc.URL
			} else {
				ro.ClusterURL = tc.URL
			}
			s, err = OpenRedis(ctx, ro)
		default:
			err = fmt.Errorf("unknown tier kind %q: %w", tc.Kind, ErrConfig)
		}
		if err != nil {
			return fail(fmt.Errorf("open tier %d (%s): %w", i+1, tc.Kind, err))
		}
		tiers = append(tiers, s)
	}
	to := opts.Tiered
	to.BlobOptions = opts.BlobOptions
	if to.Logger == nil {
		to.Logger = opts.Logger
	}
	t, err := NewTiered(to, tiers...)
	if err != nil {
		return fail(err)
	}
	return t, nil
}
