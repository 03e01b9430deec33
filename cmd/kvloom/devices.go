package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/simnic"
)

// devicesReport is what `kvloom devices --json` prints.
type devicesReport struct {
	Devices []nic.Found `json:"devices"`
	Errors  []string    `json:"errors,omitempty"`
}

func newDevicesCmd() *cobra.Command {
	var (
		sysfsRoot string
		asJSON    bool
		daemon    string
	)
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "list the accelerators on this machine (FPGA cards, the simulator): kind, address, image, table occupancy",
		Long: `devices discovers the accelerators kvloom can drive — FPGA cards in sysfs (AMD Alveo,
Intel PAC/DFL) and the built-in simulator — without changing them: each card's BAR is
mapped read-only to read its loaded image and index-table occupancy. A device with a
problem (no kvloom image, BAR too small, golden image) is listed with the reason.
The simulator is started fresh by every daemon, so its table shows empty here.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if daemon != "" {
				return daemonDevices(cmd, daemon, asJSON)
			}
			simBackend, err := simnic.NewBackend(simnic.Options{})
			if err != nil {
				return err
			}
			reg, err := nic.NewRegistry(fpga.NewBackend(fpga.Options{SysfsRoot: sysfsRoot}), simBackend)
			if err != nil {
				return err
			}
			found, derr := reg.Discover(cmd.Context())
			rep := devicesReport{Devices: found}
			if rep.Devices == nil {
				rep.Devices = []nic.Found{}
			}
			if derr != nil {
				rep.Errors = append(rep.Errors, derr.Error())
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, rep)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tADDRESS\tNAME\tIMAGE\tTABLE\tSTATUS")
			for _, f := range rep.Devices {
				image := f.Image
				if image == "" {
					image = "-"
				}
				table := "-"
				if f.TableCapacity >= 0 {
					table = fmt.Sprintf("%d/%d", f.TableEntries, f.TableCapacity)
				}
				status := "ready"
				if f.Problem != "" {
					status = f.Problem
				} else if f.Simulated && f.Kind != nic.KindSim {
					status = "ready (simulated card)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Kind, f.Address, f.Name, image, table, status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, e := range rep.Errors {
				fmt.Fprintln(cmd.ErrOrStderr(), "kvloom devices: warning:", e)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&sysfsRoot, "sysfs-root", fpga.DefaultSysfsRoot, "where sysfs is mounted (a fake tree in tests)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&daemon, "daemon", "", "ask the kvloomd at this address (Unix socket path or host:port) for the devices it drives, with live counters")
	return cmd
}

// daemonDevices asks a running kvloomd for its devices: the one it drives
// (with live table occupancy and counters) and the others it can see.
func daemonDevices(cmd *cobra.Command, addr string, asJSON bool) error {
	df := daemonFlags{addr: addr, timeout: 10 * time.Second, asJSON: asJSON}
	return df.call(cmd, func(ctx context.Context, c api.KVLoomClient) error {
		r, err := c.Devices(ctx, &api.DevicesRequest{})
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if asJSON {
			return printJSON(out, r)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tADDRESS\tNAME\tIMAGE\tTABLE\tSTATUS")
		for _, d := range r.Devices {
			status := "ready"
			switch {
			case d.Active:
				status = fmt.Sprintf("driven by kvloomd (%d requests, %d matches)", d.Requests, d.Matches)
			case d.Problem != "":
				status = d.Problem
			}
			image := d.Image
			if image == "" {
				image = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", d.Kind, d.Address, d.Name, image, d.TableEntries, d.TableCapacity, status)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, e := range r.Errors {
			fmt.Fprintln(cmd.ErrOrStderr(), "kvloom devices: warning:", e)
		}
		return nil
	})
}
