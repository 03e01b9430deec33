// Command kvloom is the kvloom command-line tool: matching, topology,
// images, devices, simulation and tuning, and a client for kvloomd.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// errUsage marks errors that are the caller's fault; they exit with code 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvloom:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kvloom",
		Short:         "KV-cache reuse in the network: matching, devices, simulation, tuning",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newMatchCmd(),
		newDemoCmd(),
		newSimCmd(),
		newTuneCmd(),
		newGenerateCmd(),
		newEvalCmd(),
		newTopoCmd(),
		newImageCmd(),
		newDevicesCmd(),
		newKVCmd(),
		newKVLPCmd(),
		newTraceCmd(),
		newStatusCmd(),
		newStatsCmd(),
		newLookupCmd(),
		newPrepareCmd(),
		newEvictCmd(),
	)
	return root
}
