package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/sim/topology"
)

func newTopoCmd() *cobra.Command {
	var (
		asJSON   bool
		export   string
		sysfs    string
		noNVML   bool
		hostName string
		gpuModel string
		nicBW    string
	)
	cmd := &cobra.Command{
		Use:   "topo",
		Short: "show the GPUs, NICs, FPGAs and NVMe drives and the PCIe distances between them",
		Long: `topo discovers this host's PCI devices from sysfs (and its GPUs through NVML
where libnvidia-ml is present) and prints the distance matrix the way
nvidia-smi topo -m does, with NICs, FPGAs and NVMe drives included, followed
by every PCI function found. --export writes the host as a topology file
(docs/topology.md) for kvloom sim and kvloom tune.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var bw topology.Bandwidth
			if nicBW != "" {
				var err error
				if bw, err = topology.ParseBandwidth(nicBW); err != nil {
					return fmt.Errorf("--nic-bandwidth: %w: %w", err, errUsage)
				}
			}
			// The report states NVML's status and every warning itself; the
			// log only carries errors.
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
			topo, err := gpu.Discover(cmd.Context(), gpu.Options{SysfsRoot: sysfs, DisableNVML: noNVML, Logger: log})
			if err != nil {
				return err
			}
			if export != "" {
				out, notes, err := topo.Export(gpu.ExportOptions{HostName: hostName, GPUModel: gpuModel, NICBandwidth: bw})
				if err != nil {
					return err
				}
				data, err := out.Marshal()
				if err != nil {
					return err
				}
				if err := os.WriteFile(export, data, 0o644); err != nil {
					return fmt.Errorf("write topology file: %w", err)
				}
				for _, n := range notes {
					fmt.Fprintf(cmd.ErrOrStderr(), "kvloom topo: %s\n", n)
				}
			}
			if asJSON {
				rep, err := topo.Report()
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			desc, err := topo.Describe()
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), desc)
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the topology, every PCI function and the matrix as JSON")
	f.StringVar(&export, "export", "", "write the host as a topology file (docs/topology.md) to `FILE`")
	f.StringVar(&sysfs, "sysfs", "/sys", "sysfs mount to read (a captured or fake tree for testing)")
	f.BoolVar(&noNVML, "no-nvml", false, "do not ask NVML; GPUs from sysfs only")
	f.StringVar(&hostName, "host", "", "host name in the exported file (default host0)")
	f.StringVar(&gpuModel, "gpu-model", "", "sim/topology preset for GPUs without one (--export)")
	f.StringVar(&nicBW, "nic-bandwidth", "", "line rate assumed for NICs whose rate the kernel does not report (--export; default 100Gbps)")
	return cmd
}
