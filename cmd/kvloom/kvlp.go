package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket/pcapgo"
	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/nic/wire"
)

func newKVLPCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kvlp",
		Short: "read and capture KVLP hint traffic (docs/protocol.md)",
	}
	cmd.AddCommand(newKVLPDecodeCmd(), newKVLPCaptureCmd())
	return cmd
}

// kvlpFrame is one line of `kvloom kvlp decode --json`.
type kvlpFrame struct {
	Frame     int       `json:"frame"`
	Time      time.Time `json:"time"`
	Src       string    `json:"src,omitempty"`
	Dst       string    `json:"dst,omitempty"`
	Type      string    `json:"type,omitempty"`
	RequestID uint64    `json:"request_id,omitempty"`
	SaltID    string    `json:"salt_id,omitempty"`
	FragIndex uint16    `json:"frag_index"`
	FragCount uint16    `json:"frag_count,omitempty"`
	Entries   int       `json:"entries,omitempty"`
	Hits      uint16    `json:"hits,omitempty"`
	NoReply   bool      `json:"no_reply,omitempty"`
	Error     string    `json:"error,omitempty"`
}

func newKVLPDecodeCmd() *cobra.Command {
	var (
		port   uint16
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "decode FILE.pcap",
		Short: "list the KVLP messages of a pcap capture, and the malformed ones with what is wrong",
		Long: `decode reads a pcap file of Ethernet frames (kvloom kvlp capture, tcpdump -w) and prints
one line per KVLP message on the given UDP port: type, request, salt, fragment, entries,
hits; a malformed message is printed with the field that is wrong. Other traffic is
counted and skipped. For the full detail of every entry, open the file in Wireshark
with docs/kvlp.lua.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return decodeKVLP(cmd.OutOrStdout(), f, port, asJSON)
		},
	}
	cmd.Flags().Uint16Var(&port, "port", wire.DefaultPort, "UDP port KVLP runs on")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per message")
	return cmd
}

func decodeKVLP(out io.Writer, r io.Reader, port uint16, asJSON bool) error {
	pr, err := pcapgo.NewReader(r)
	if err != nil {
		return fmt.Errorf("read pcap: %w: %w", err, errUsage)
	}
	parser := wire.NewParser(port)
	enc := json.NewEncoder(out)
	var kvlp, malformed, other int
	for n := 1; ; n++ {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read pcap frame %d: %w", n, err)
		}
		line := kvlpFrame{Frame: n, Time: ci.Timestamp.UTC()}
		pkt, err := parser.Parse(data)
		switch {
		case errors.Is(err, wire.ErrNotKVLP):
			other++
			continue
		case err != nil:
			malformed++
			line.Error = err.Error()
		default:
			kvlp++
			m := pkt.Message
			line.Src = fmt.Sprintf("%s:%d", pkt.SrcIP, pkt.SrcPort)
			line.Dst = fmt.Sprintf("%s:%d", pkt.DstIP, pkt.DstPort)
			line.Type, line.RequestID, line.SaltID = m.Type.String(), m.RequestID, fmt.Sprintf("%#016x", m.SaltID)
			line.FragIndex, line.FragCount, line.Entries, line.Hits = m.FragIndex, m.FragCount, m.Count(), m.Hits
			line.NoReply = m.Flags&wire.FlagNoReply != 0
		}
		if asJSON {
			if err := enc.Encode(line); err != nil {
				return err
			}
			continue
		}
		ts := line.Time.Format("15:04:05.000000")
		if line.Error != "" {
			fmt.Fprintf(out, "%5d %s malformed: %s\n", n, ts, line.Error)
			continue
		}
		fmt.Fprintf(out, "%5d %s %s → %s %s req=%d salt=%s frag=%d/%d entries=%d", n, ts, line.Src, line.Dst, line.Type, line.RequestID, line.SaltID, line.FragIndex, line.FragCount, line.Entries)
		if pkt.Message.Type == wire.TypeHintReply {
			fmt.Fprintf(out, " hits=%d", line.Hits)
		}
		if line.NoReply {
			fmt.Fprint(out, " no-reply")
		}
		fmt.Fprintln(out)
	}
	if !asJSON {
		fmt.Fprintf(out, "%d KVLP messages, %d malformed, %d other frames\n", kvlp, malformed, other)
	}
	return nil
}

func newKVLPCaptureCmd() *cobra.Command {
	var (
		iface    string
		port     uint16
		outPath  string
		duration time.Duration
		all      bool
	)
	cmd := &cobra.Command{
		Use:   "capture --iface IFACE --out FILE.pcap [--port N] [--duration D] [--all]",
		Short: "record KVLP traffic on an interface into a pcap file (needs CAP_NET_RAW)",
		Long: `capture records the frames crossing an interface, both directions, into a pcap file
that Wireshark reads with docs/kvlp.lua and kvloom kvlp decode lists. It keeps UDP frames
to or from the KVLP port (malformed ones included) unless --all, and runs for --duration
or until interrupted. Hints answered by an XDP program on the same interface are not seen
on its receiving side (XDP runs before the capture point): capture on the sender's side,
or on a mirror port.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if iface == "" || outPath == "" {
				return fmt.Errorf("capture: --iface and --out are required: %w", errUsage)
			}
			c, err := wire.OpenCapture(iface)
			if err != nil {
				return err
			}
			defer c.Close()
			f, err := os.Create(outPath)
			if err != nil {
				return err
			}
			rec, err := wire.NewRecorder(f, 0)
			if err != nil {
				f.Close()
				return err
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			parser := wire.NewParser(port)
			keep := func(frame []byte) bool {
				_, err := parser.Parse(frame)
				return !errors.Is(err, wire.ErrNotKVLP)
			}
			if all {
				keep = nil
			}
			n, err := c.Run(ctx, rec, keep)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "captured %d frames on %s into %s\n", n, iface, outPath)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&iface, "iface", "", "network interface to capture on")
	fl.StringVar(&outPath, "out", "", "pcap file to write")
	fl.Uint16Var(&port, "port", wire.DefaultPort, "UDP port KVLP runs on")
	fl.DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	fl.BoolVar(&all, "all", false, "keep every frame, not only KVLP")
	return cmd
}
