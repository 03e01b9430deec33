package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/spf13/cobra"
)

func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "model KV shapes and chunk blobs: presets, model files, blob inspection",
	}
	cmd.AddCommand(newKVPresetsCmd(), newKVModelCmd(), newKVInspectCmd())
	return cmd
}

// modelReport is what kv model and kv presets print per model.
type modelReport struct {
	Spec            kvcache.ModelSpec
	KVBytesPerToken int
	Fingerprint     string
}

func reportOf(s kvcache.ModelSpec) modelReport {
	fp := s.Fingerprint()
	return modelReport{Spec: s, KVBytesPerToken: s.KVBytesPerToken(), Fingerprint: hex.EncodeToString(fp[:])}
}

func newKVPresetsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "presets [--json]",
		Short: "list the built-in model presets with their KV bytes per token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var reps []modelReport
			for _, s := range kvcache.Presets() {
				reps = append(reps, reportOf(s))
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), reps)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tLAYERS\tHEADS/KV\tHEAD DIM\tDTYPE\tKV/TOKEN\tPARAMS\tROPE")
			for _, r := range reps {
				s := r.Spec
				fmt.Fprintf(w, "%s\t%d\t%d/%d\t%d\t%s\t%d\t%d\t%s θ=%g %s\n", s.Name, s.Layers, s.AttnHeads, s.KVHeads, s.HeadDim,
					s.DType, r.KVBytesPerToken, s.Params, s.RoPE.Style, s.RoPE.Theta, s.RoPE.Scaling.Type)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON instead of a table")
	return cmd
}

func newKVModelCmd() *cobra.Command {
	var preset, hfConfig, gguf, llama2c, weights, dtype string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "model (--preset NAME | --hf-config PATH --weights-id ID | --gguf PATH | --llama2c PATH) [--kv-dtype D] [--json]",
		Short: "describe a model's KV: shape, bytes per token, RoPE, fingerprint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0
			for _, v := range []string{preset, hfConfig, gguf, llama2c} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("kv model needs exactly one of --preset, --hf-config, --gguf, --llama2c: %w", errUsage)
			}
			opts := kvcache.LoadOptions{WeightsID: weights}
			if dtype != "" {
				d, err := kvcache.ParseDType(dtype)
				if err != nil {
					return fmt.Errorf("%w: %w", errUsage, err)
				}
				opts.KVDType = d
			}
			var s kvcache.ModelSpec
			var err error
			switch {
			case preset != "":
				s, err = kvcache.Preset(preset)
				if err == nil && opts.KVDType != 0 {
					s.DType = opts.KVDType
				}
				if errors.Is(err, kvcache.ErrUnknownPreset) {
					err = fmt.Errorf("%w: %w", errUsage, err)
				}
			case hfConfig != "":
				s, err = kvcache.LoadHFConfig(hfConfig, opts)
			case gguf != "":
				s, err = kvcache.LoadGGUF(gguf, opts)
			default:
				s, err = kvcache.LoadLlama2C(llama2c, opts)
			}
			if err != nil {
				return err
			}
			r := reportOf(s)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, s.String())
			fmt.Fprintf(out, "hidden %d, intermediate %d, vocab %d, params %d, max positions %d\n", s.HiddenSize, s.IntermediateSize, s.VocabSize, s.Params, s.MaxPositions)
			fmt.Fprintf(out, "weights %s\nfingerprint %s\n", s.WeightsID, r.Fingerprint)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&preset, "preset", "", "built-in preset (kvloom kv presets lists them)")
	f.StringVar(&hfConfig, "hf-config", "", "Hugging Face config.json, or the model directory holding it")
	f.StringVar(&gguf, "gguf", "", "GGUF model file (metadata only is read, plus a hash of the file unless --weights-id)")
	f.StringVar(&llama2c, "llama2c", "", "llama2.c checkpoint (.bin)")
	f.StringVar(&weights, "weights-id", "", "identity of the weights, e.g. hf:org/model@rev (required with --hf-config)")
	f.StringVar(&dtype, "kv-dtype", "", "KV cache dtype: f32, f16, bf16 or fp8-e4m3 (default: what the file implies)")
	f.BoolVar(&asJSON, "json", false, "write JSON")
	return cmd
}

// blobReport is what kv inspect prints.
type blobReport struct {
	Key          string
	Model        string
	SaltID       string
	Tokens       int
	BasePos      int
	Shape        string
	Codec        kvcache.CodecID
	Size         int64
	LayersOK     int
	LayerErrors  []string `json:",omitempty"`
	FirstTokens  []uint32
	PayloadBytes int64
}

func newKVInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE [--json]",
		Short: "print a chunk blob's header and verify every layer's CRC32C",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			h, err := kvcache.ParseHeader(data, kvcache.DecodeOptions{})
			if err != nil {
				return fmt.Errorf("inspect %s: %w", args[0], err)
			}
			if int64(len(data)) != h.Size {
				return fmt.Errorf("inspect %s: %d bytes, header declares %d: %w", args[0], len(data), h.Size, kvcache.ErrTruncated)
			}
			r := blobReport{Key: h.Key.String(), Model: hex.EncodeToString(h.Model[:]), SaltID: fmt.Sprintf("%016x", h.SaltID),
				Tokens: len(h.Tokens), BasePos: h.BasePos, Shape: h.Shape.String(), Codec: h.Codec, Size: h.Size,
				FirstTokens: h.Tokens[:min(8, len(h.Tokens))]}
			for l, e := range h.Table {
				r.PayloadBytes += e.Length
				if err := h.CheckLayer(l, data[e.Offset:e.Offset+e.Length]); err != nil {
					r.LayerErrors = append(r.LayerErrors, err.Error())
					continue
				}
				r.LayersOK++
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), r); err != nil {
					return err
				}
			} else {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "key %s\nmodel %s\nsalt id %s\ntokens %d from position %d (first %v)\nshape %s, codec %d, %d bytes (%d payload)\nlayers verified %d/%d\n",
					r.Key, r.Model, r.SaltID, r.Tokens, r.BasePos, r.FirstTokens, r.Shape, r.Codec, r.Size, r.PayloadBytes, r.LayersOK, len(h.Table))
				for _, e := range r.LayerErrors {
					fmt.Fprintln(out, "  ", e)
				}
			}
			if len(r.LayerErrors) > 0 {
				return fmt.Errorf("inspect %s: %d of %d layers fail their checksum: %w", args[0], len(r.LayerErrors), len(h.Table), kvcache.ErrChecksum)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON")
	return cmd
}
