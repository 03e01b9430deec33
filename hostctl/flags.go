package hostctl

import (
	"github.com/spf13/pflag"
)

// Flags are kvloomd's command-line flags: each overrides one key of the
// configuration file (flags win over the file, the file over defaults).
type Flags struct {
	fs         *pflag.FlagSet
	ConfigPath string
	Print      bool
	v          Config
	peers      []string
}

// BindFlags defines the flags on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	def := DefaultConfig()
	fs.StringVar(&f.ConfigPath, "config", "", "configuration file (YAML, docs/operations.md); none runs on defaults")
	fs.BoolVar(&f.Print, "print-config", false, "print the merged configuration and exit")
	fs.StringVar(&f.v.DataDir, "data-dir", def.DataDir, "data_dir: state directory (disk tier, socket, index journal)")
	fs.StringVar(&f.v.Listen.Socket, "socket", "", "listen.socket: Unix socket path (\"off\" disables it)")
	fs.StringVar(&f.v.Listen.TCP, "tcp", "", "listen.tcp: TCP address for remote engines and peers")
	fs.BoolVar(&f.v.Listen.InsecureTCP, "insecure-tcp", false, "listen.insecure_tcp: TCP without TLS (loopback testing only)")
	fs.StringVar(&f.v.Metrics.Listen, "metrics", def.Metrics.Listen, "metrics.listen: Prometheus /metrics address (empty disables)")
	fs.StringVar(&f.v.Device.Backend, "device", def.Device.Backend, "device.backend: auto, sim, fpga[:BDF], xdp:IFACE or none")
	fs.StringVar(&f.v.Tiers, "tiers", "", "tiers: mem:SIZE,disk:PATH:SIZE,redis://HOST:PORT")
	fs.StringVar(&f.v.Log.Format, "log-format", def.Log.Format, "log.format: text or json")
	fs.StringVar(&f.v.Log.Level, "log-level", def.Log.Level, "log.level: debug, info, warn or error")
	fs.StringVar(&f.v.GPU.DMA, "dma", def.GPU.DMA, "gpu.dma: auto, sim, cuda or off")
	fs.StringArrayVar(&f.peers, "peer", nil, "peers.static: a peer daemon's host:port (repeatable)")
	fs.StringVar(&f.v.Peers.Redis, "peers-redis", "", "peers.redis: Redis URL of the daemon directory")
	fs.StringVar(&f.v.Peers.Advertise, "advertise", "", "peers.advertise: the address peers reach this daemon at")
	return f
}

// Load reads the configuration file (if any) and applies the flags that
// were set on the command line.
func (f *Flags) Load() (Config, error) {
	cfg := DefaultConfig()
	if f.ConfigPath != "" {
		var err error
		if cfg, err = LoadConfig(f.ConfigPath); err != nil {
			return Config{}, err
		}
	}
	set := func(name string, apply func()) {
		if f.fs.Changed(name) {
			apply()
		}
	}
	set("data-dir", func() { cfg.DataDir = f.v.DataDir })
	set("socket", func() { cfg.Listen.Socket = f.v.Listen.Socket })
	set("tcp", func() { cfg.Listen.TCP = f.v.Listen.TCP })
	set("insecure-tcp", func() { cfg.Listen.InsecureTCP = f.v.Listen.InsecureTCP })
	set("metrics", func() { cfg.Metrics.Listen = f.v.Metrics.Listen })
	set("device", func() { cfg.Device.Backend = f.v.Device.Backend })
	set("tiers", func() { cfg.Tiers = f.v.Tiers })
	set("log-format", func() { cfg.Log.Format = f.v.Log.Format })
	set("log-level", func() { cfg.Log.Level = f.v.Log.Level })
	set("dma", func() { cfg.GPU.DMA = f.v.GPU.DMA })
	set("peer", func() { cfg.Peers.Static = f.peers })
	set("peers-redis", func() { cfg.Peers.Redis = f.v.Peers.Redis })
	set("advertise", func() { cfg.Peers.Advertise = f.v.Peers.Advertise })
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
