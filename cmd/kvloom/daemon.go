package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
)

// daemonFlags are the flags every command that talks to kvloomd shares.
type daemonFlags struct {
	addr          string
	ca, cert, key string
	timeout       time.Duration
	asJSON        bool
}

func (f *daemonFlags) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	def := hostctl.DefaultConfig()
	fs.StringVar(&f.addr, "daemon", def.SocketPath(), "kvloomd address: a Unix socket path or host:port")
	fs.StringVar(&f.ca, "ca", "", "CA bundle to verify a TCP daemon's certificate (enables TLS)")
	fs.StringVar(&f.cert, "cert", "", "client certificate for a daemon that requires one")
	fs.StringVar(&f.key, "key", "", "client key")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "deadline of the call")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
}

// call dials the daemon and runs fn with a client under the timeout.
func (f *daemonFlags) call(cmd *cobra.Command, fn func(context.Context, api.KVLoomClient) error) error {
	conn, err := hostctl.Dial(f.addr, hostctl.DialOptions{CA: f.ca, Cert: f.cert, Key: f.key})
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	if err := fn(ctx, api.NewKVLoomClient(conn)); err != nil {
		return fmt.Errorf("kvloomd at %s: %w", f.addr, err)
	}
	return nil
}

// promptFlags name a prompt: tenant, model and tokens.
type promptFlags struct {
	tenant, model string
	tokens        string
	tokensFile    string
}

func (p *promptFlags) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&p.tenant, "tenant", "", "tenant namespace (required)")
	fs.StringVar(&p.model, "model", "", "model name (a preset or a configured model; required)")
	fs.StringVar(&p.tokens, "tokens", "", "token ids, comma or space separated")
	fs.StringVar(&p.tokensFile, "tokens-file", "", "file of token ids (a JSON array or whitespace separated; - for stdin)")
}

// promptCmd holds the flags of the commands that send kvloomd a prompt
// (lookup, prepare, evict).
type promptCmd struct {
	daemonFlags
	promptFlags
}

func (p *promptCmd) bind(cmd *cobra.Command) {
	p.daemonFlags.bind(cmd)
	p.promptFlags.bind(cmd)
}

// callPrompt reads the prompt, before dialling (a usage error needs no
// daemon), and runs fn with its tokens against kvloomd.
func (p *promptCmd) callPrompt(cmd *cobra.Command, fn func(ctx context.Context, c api.KVLoomClient, toks []uint32) error) error {
	toks, err := p.read(cmd.InOrStdin())
	if err != nil {
		return err
	}
	return p.call(cmd, func(ctx context.Context, c api.KVLoomClient) error { return fn(ctx, c, toks) })
}

// read returns the prompt's tokens.
func (p *promptFlags) read(stdin io.Reader) ([]uint32, error) {
	if p.tenant == "" || p.model == "" {
		return nil, fmt.Errorf("--tenant and --model are required: %w", errUsage)
	}
	src := p.tokens
	if p.tokensFile != "" {
		var b []byte
		var err error
		if p.tokensFile == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(p.tokensFile)
		}
		if err != nil {
			return nil, fmt.Errorf("read tokens: %w", err)
		}
		src = string(b)
	}
	src = strings.TrimSpace(src)
	if strings.HasPrefix(src, "[") {
		var out []uint32
		if err := json.Unmarshal([]byte(src), &out); err != nil {
			return nil, fmt.Errorf("tokens: %v: %w", err, errUsage)
		}
		return out, nil
	}
	fields := strings.FieldsFunc(src, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("no tokens (--tokens or --tokens-file): %w", errUsage)
	}
	out := make([]uint32, len(fields))
	for i, s := range fields {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("token %d %q: %v: %w", i, s, err, errUsage)
		}
		out[i] = uint32(v)
	}
	return out, nil
}
