// Command kvloomd is kvloom's host daemon: it serves the gRPC API engines
// and routers talk to (docs/api.md), runs the control loop that keeps the
// accelerator's table hot, and serves its chunks to peer daemons. All of it
// lives in package hostctl; this is flags, configuration, logger, signals
// and exit codes (docs/operations.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvloomd:", err)
		if errors.Is(err, hostctl.ErrConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newRootCmd(logOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "kvloomd",
		Short:         "kvloom's host daemon: KV-cache reuse for the inference engines on this host",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	flags := hostctl.BindFlags(root.Flags())
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := flags.Load()
		if err != nil {
			return err
		}
		if flags.Print {
			return printConfig(cmd.OutOrStdout(), cfg)
		}
		log, err := hostctl.NewLogger(cfg.Log, logOut)
		if err != nil {
			return err
		}
		d, err := hostctl.New(cmd.Context(), cfg, hostctl.Options{Logger: log, Version: version})
		if err != nil {
			return err
		}
		return d.Run(cmd.Context())
	}
	cfgCmd := &cobra.Command{Use: "config", Short: "configuration helpers"}
	cfgCmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "print the default configuration, every key documented",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printConfig(cmd.OutOrStdout(), hostctl.DefaultConfig())
		},
	})
	root.AddCommand(cfgCmd)
	return root
}

func printConfig(w io.Writer, cfg hostctl.Config) error {
	b, err := hostctl.MarshalConfig(cfg)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
