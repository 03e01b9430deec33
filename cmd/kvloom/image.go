package main

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "build, sign, inspect and verify accelerator images",
		Long: `image works with kvloom's signed accelerator images (docs/bitstream.md): an
FPGA bitstream or Vitis xclbin, an eBPF object for XDP, or the parameters of
the simulated accelerator, with a manifest, SHA-256 per payload and an
ed25519 signature.`,
	}
	cmd.AddCommand(newImageKeygenCmd(), newImageBuildCmd(), newImageInspectCmd(), newImageVerifyCmd())
	return cmd
}

func newImageKeygenCmd() *cobra.Command {
	var (
		out    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "make an ed25519 signing key: PREFIX.key (0600) and PREFIX.pub",
		Long: `keygen writes a new ed25519 key pair as PEM (PKCS #8 and PKIX, the forms
openssl uses). Copy PREFIX.pub into the daemon's trust directory; keep
PREFIX.key secret. Existing files are never overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required: %w", errUsage)
			}
			pub, priv, err := bitstream.GenerateKey(nil)
			if err != nil {
				return err
			}
			keyPath, pubPath, err := bitstream.WriteKeyPair(out, priv)
			if err != nil {
				return err
			}
			id := bitstream.KeyID(pub)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"key_id": id, "private_key": keyPath, "public_key": pubPath})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "key %s\nprivate %s\npublic  %s\n", id, keyPath, pubPath)
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type imageBuildFlags struct {
	out, manifest, kind, name, version       string
	part, driver, interfaceID, acceleratorID string
	partial                                  bool
	regmap                                   string
	matcher                                  bitstream.MatcherParams
	params, payloads                         []string
	key                                      string
	unsigned                                 bool
	buildTime, source, builder               string
	asJSON                                   bool
}

func newImageBuildCmd() *cobra.Command {
	var f imageBuildFlags
	cmd := &cobra.Command{
		Use:   "build --out FILE --kind fpga|xdp|sim --name NAME --version X.Y.Z [--payload TYPE:NAME=FILE]... (--key FILE | --unsigned)",
		Short: "build and sign an image from payloads and manifest fields",
		Long: `build assembles an image. Manifest fields come from flags, or from --manifest
(a JSON manifest, docs/bitstream.md) with flags overriding it. Payloads are
TYPE:NAME=FILE with TYPE one of raw, xilinx-bit, xclbin2, ebpf-elf; vendor
payloads are checked by their parsers. Matcher parameters default to the
matcher package's defaults. Parameters are NAME=VALUE[:UNIT]; the simulator's
pipeline parameters (clock_mhz, lanes, lookup_latency_cycles,
request_queue_depth, completion_queue_depth, pcie_gbps, network_gbps) are
required for sim images and take their documented types and units.

Example:
  kvloom image build --out sim.kvlimg --kind sim --name simnic --version 1.0.0 \
    --param clock_mhz=250 --param lanes=8 --param lookup_latency_cycles=4 \
    --param request_queue_depth=256 --param completion_queue_depth=1024 \
    --param pcie_gbps=256 --param network_gbps=100 --key release.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runImageBuild(cmd, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.out, "out", "", "image file to write")
	fl.StringVar(&f.manifest, "manifest", "", "JSON manifest to start from")
	fl.StringVar(&f.kind, "kind", "", "image kind: fpga, xdp or sim")
	fl.StringVar(&f.name, "name", "", "image name ([a-z0-9._-], up to 64)")
	fl.StringVar(&f.version, "version", "", "semantic version, e.g. 1.4.0")
	fl.StringVar(&f.part, "part", "", "target FPGA part, or simnic")
	fl.StringVar(&f.driver, "driver", "", "target driver: fpga_manager name, NIC driver or XRT platform")
	fl.StringVar(&f.interfaceID, "interface-id", "", "static region interface UUID the image was built against")
	fl.StringVar(&f.acceleratorID, "accelerator-id", "", "UUID the device reports once the image is live (DFL afu_id)")
	fl.BoolVar(&f.partial, "partial", false, "partial-reconfiguration bitstream")
	fl.StringVar(&f.regmap, "regmap", "1.0", "register-map version MAJOR.MINOR the image implements")
	fl.IntVar(&f.matcher.AnchorWindow, "anchor-window", matcher.DefaultMinLen-matcher.DefaultAnchorK+1, "anchor rolling-hash window, tokens")
	fl.IntVar(&f.matcher.KGram, "kgram", matcher.DefaultAnchorK, "tokens hashed per anchor")
	fl.IntVar(&f.matcher.MinMatch, "min-match", matcher.DefaultMinLen, "shortest reported match, tokens")
	fl.IntVar(&f.matcher.BlockTokens, "block-tokens", matcher.DefaultBlockSize, "prefix block size, tokens")
	fl.IntVar(&f.matcher.ChunkTokens, "chunk-tokens", 4096, "longest chunk a table entry holds, tokens")
	fl.IntVar(&f.matcher.TableCapacity, "table-capacity", 65536, "hot index entries the device table holds")
	fl.StringArrayVar(&f.params, "param", nil, "parameter NAME=VALUE[:UNIT] (repeatable)")
	fl.StringArrayVar(&f.payloads, "payload", nil, "payload TYPE:NAME=FILE (repeatable)")
	fl.StringVar(&f.key, "key", "", "private key to sign with (PEM)")
	fl.BoolVar(&f.unsigned, "unsigned", false, "build an unsigned image (loaders refuse it unless insecure)")
	fl.StringVar(&f.buildTime, "build-time", "", "build time, RFC 3339 UTC; default $SOURCE_DATE_EPOCH or now")
	fl.StringVar(&f.source, "source", "", "source revision recorded in the manifest")
	fl.StringVar(&f.builder, "builder", "", "who or what built the image")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	return cmd
}

func runImageBuild(cmd *cobra.Command, f *imageBuildFlags) error {
	if f.out == "" {
		return fmt.Errorf("--out is required: %w", errUsage)
	}
	if (f.key == "") == !f.unsigned {
		return fmt.Errorf("give exactly one of --key and --unsigned: %w", errUsage)
	}
	m, err := imageManifest(cmd, f)
	if err != nil {
		return err
	}
	var payloads []bitstream.Payload
	for _, spec := range f.payloads {
		p, err := imagePayload(spec)
		if err != nil {
			return err
		}
		payloads = append(payloads, p)
	}
	var key ed25519.PrivateKey // nil: unsigned
	if !f.unsigned {
		if key, err = bitstream.ReadPrivateKey(f.key); err != nil {
			return err
		}
	}
	img, err := bitstream.Build(m, payloads, key)
	if err != nil {
		return err
	}
	if err := img.WriteFile(f.out); err != nil {
		return err
	}
	signer, _ := img.Signer()
	if f.asJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]any{"path": f.out, "id": img.ID(), "size": img.Size(), "signer": signer})
	}
	if signer == "" {
		signer = "unsigned"
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s, %d bytes, id %s, signer %s\n", f.out, img, img.Size(), img.ID(), signer)
	return err
}

// imageManifest assembles the manifest from --manifest and the flags that
// were set (or have no value in the file).
func imageManifest(cmd *cobra.Command, f *imageBuildFlags) (bitstream.Manifest, error) {
	var m bitstream.Manifest
	fromFile := f.manifest != ""
	if fromFile {
		data, err := os.ReadFile(f.manifest)
		if err != nil {
			return m, fmt.Errorf("read manifest: %w", err)
		}
		if m, err = bitstream.DecodeManifest(data); err != nil {
			return m, fmt.Errorf("manifest %s: %w", f.manifest, err)
		}
	}
	set := func(name string) bool { return !fromFile || cmd.Flags().Changed(name) }
	str := func(name string, dst *string, v string) {
		if set(name) && (v != "" || fromFile) {
			*dst = v
		}
	}
	str("kind", (*string)(&m.Kind), f.kind)
	str("name", &m.Name, f.name)
	str("version", &m.Version, f.version)
	str("part", &m.Target.Part, f.part)
	str("driver", &m.Target.Driver, f.driver)
	str("source", &m.Build.Source, f.source)
	str("builder", &m.Build.Builder, f.builder)
	for flag, dst := range map[string]*string{"interface-id": &m.Target.InterfaceID, "accelerator-id": &m.Target.AcceleratorID} {
		v := cmd.Flags().Lookup(flag).Value.String()
		if v == "" || !set(flag) {
			continue
		}
		id, err := bitstream.NormalizeUUID(v)
		if err != nil {
			return m, fmt.Errorf("--%s: %w: %w", flag, err, errUsage)
		}
		*dst = id
	}
	if set("partial") {
		m.Target.Partial = f.partial
	}
	if set("regmap") {
		v, err := bitstream.ParseRegMapVersion(f.regmap)
		if err != nil {
			return m, fmt.Errorf("--regmap: %w: %w", err, errUsage)
		}
		m.RegMap = v
	}
	for flag, pair := range map[string][2]*int{
		"anchor-window": {&m.Matcher.AnchorWindow, &f.matcher.AnchorWindow}, "kgram": {&m.Matcher.KGram, &f.matcher.KGram},
		"min-match": {&m.Matcher.MinMatch, &f.matcher.MinMatch}, "block-tokens": {&m.Matcher.BlockTokens, &f.matcher.BlockTokens},
		"chunk-tokens": {&m.Matcher.ChunkTokens, &f.matcher.ChunkTokens}, "table-capacity": {&m.Matcher.TableCapacity, &f.matcher.TableCapacity},
	} {
		if set(flag) {
			*pair[0] = *pair[1]
		}
	}
	for _, s := range f.params {
		p, err := imageParam(s)
		if err != nil {
			return m, err
		}
		if i := slices.IndexFunc(m.Params, func(q bitstream.Param) bool { return q.Name == p.Name }); i >= 0 {
			m.Params[i] = p
		} else {
			m.Params = append(m.Params, p)
		}
	}
	m.SortParams()
	switch {
	case f.buildTime != "":
		m.Build.Time = f.buildTime
	case m.Build.Time == "":
		t := time.Now()
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			sec, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return m, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
			}
			t = time.Unix(sec, 0)
		}
		m.Build.Time = t.UTC().Format(time.RFC3339)
	}
	if m.Build.Tool == "" {
		m.Build.Tool = "kvloom " + version
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("manifest: %w: %w", err, errUsage)
	}
	return m, nil
}

// imageParam parses NAME=VALUE[:UNIT]. Pipeline parameters take their
// documented type and unit; others are int, float, bool or else string.
func imageParam(s string) (bitstream.Param, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return bitstream.Param{}, fmt.Errorf("--param %q: want NAME=VALUE[:UNIT]: %w", s, errUsage)
	}
	val, unit, _ := strings.Cut(rest, ":")
	if typ, punit, known := bitstream.PipelineParamType(name); known {
		if unit == "" {
			unit = punit
		}
		switch typ {
		case "int":
			v, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return bitstream.Param{}, fmt.Errorf("--param %s: %q is not an integer: %w", name, val, errUsage)
			}
			return bitstream.IntParam(name, unit, v), nil
		default:
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return bitstream.Param{}, fmt.Errorf("--param %s: %q is not a number: %w", name, val, errUsage)
			}
			return bitstream.FloatParam(name, unit, v), nil
		}
	}
	if v, err := strconv.ParseInt(val, 10, 64); err == nil {
		return bitstream.IntParam(name, unit, v), nil
	}
	if v, err := strconv.ParseFloat(val, 64); err == nil {
		return bitstream.FloatParam(name, unit, v), nil
	}
	if v, err := strconv.ParseBool(val); err == nil && unit == "" {
		return bitstream.BoolParam(name, v), nil
	}
	return bitstream.StrParam(name, unit, val), nil
}

// imagePayload reads TYPE:NAME=FILE.
func imagePayload(spec string) (bitstream.Payload, error) {
	tn, file, ok := strings.Cut(spec, "=")
	typ, name, ok2 := strings.Cut(tn, ":")
	if !ok || !ok2 || file == "" {
		return bitstream.Payload{}, fmt.Errorf("--payload %q: want TYPE:NAME=FILE: %w", spec, errUsage)
	}
	t, err := bitstream.ParsePayloadType(typ)
	if err != nil {
		return bitstream.Payload{}, fmt.Errorf("--payload: %w: %w", err, errUsage)
	}
	data, err := imageReadFile(file)
	if err != nil {
		return bitstream.Payload{}, err
	}
	return bitstream.Payload{Name: name, Type: t, Data: data}, nil
}

// imageReadFile reads a file no larger than an image may be.
func imageReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bitstream.DefaultMaxImageSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > bitstream.DefaultMaxImageSize {
		return nil, fmt.Errorf("read %s: larger than the %d-byte image limit", path, bitstream.DefaultMaxImageSize)
	}
	return data, nil
}

func newImageInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "show an image's manifest and sections, and what the vendor parsers find",
		Long: `inspect prints a kvloom image's manifest, signer and sections, running each
vendor payload (.bit, xclbin2, eBPF object) through its parser. FILE may also
be a bare .bit, xclbin or eBPF object. The signature is not checked: use
kvloom image verify.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := imageReadFile(args[0])
			if err != nil {
				return err
			}
			r, err := bitstream.InspectFile(data)
			if err != nil {
				return fmt.Errorf("inspect %s: %w", args[0], err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			var b bytes.Buffer
			writeImageReport(&b, r)
			_, err = cmd.OutOrStdout().Write(b.Bytes())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeImageReport(w *bytes.Buffer, r *bitstream.Report) {
	if r.Image == nil {
		fmt.Fprintf(w, "format    %s\n", r.Format)
		writeVendor(w, "", r.Vendor)
		return
	}
	im := r.Image
	m := im.Manifest
	signer := im.Signer
	if signer == "" {
		signer = "unsigned"
	} else {
		signer = "ed25519 key " + signer + " (not verified here: kvloom image verify)"
	}
	fmt.Fprintf(w, "image     %s %s (%s)\n", m.Name, m.Version, m.Kind)
	fmt.Fprintf(w, "id        %s\n", im.ID)
	fmt.Fprintf(w, "size      %d bytes\n", im.Size)
	fmt.Fprintf(w, "signer    %s\n", signer)
	fmt.Fprintf(w, "target    part=%q driver=%q interface_id=%q accelerator_id=%q partial=%v\n",
		m.Target.Part, m.Target.Driver, m.Target.InterfaceID, m.Target.AcceleratorID, m.Target.Partial)
	fmt.Fprintf(w, "regmap    %s\n", m.RegMap)
	mp := m.Matcher
	fmt.Fprintf(w, "matcher   anchor_window=%d kgram=%d min_match=%d block_tokens=%d chunk_tokens=%d table_capacity=%d\n",
		mp.AnchorWindow, mp.KGram, mp.MinMatch, mp.BlockTokens, mp.ChunkTokens, mp.TableCapacity)
	for _, p := range m.Params {
		unit := ""
		if p.Unit != "" {
			unit = " " + p.Unit
		}
		fmt.Fprintf(w, "param     %s = %s%s (%s)\n", p.Name, p.Value(), unit, p.Type())
	}
	fmt.Fprintf(w, "build     time=%s tool=%q source=%q builder=%q\n", m.Build.Time, m.Build.Tool, m.Build.Source, m.Build.Builder)
	for i, s := range im.Sections {
		fmt.Fprintf(w, "section %d %s: %s, %d bytes, sha256 %s\n", i, s.Name, s.Type, s.Size, s.SHA256)
		writeVendor(w, "  ", s.Vendor)
	}
}

func writeVendor(w *bytes.Buffer, indent string, v *bitstream.VendorReport) {
	if v == nil {
		return
	}
	if v.Error != "" {
		fmt.Fprintf(w, "%sINVALID: %s\n", indent, v.Error)
	}
	if b := v.Bit; b != nil {
		writeBit(w, indent, b)
	}
	if x := v.Xclbin; x != nil {
		fmt.Fprintf(w, "%sxclbin2: platform %q, interface %s, uuid %s, version %s, mode %s, %d bytes, timestamp %d\n",
			indent, x.PlatformVBNV, x.InterfaceUUID, x.UUID, x.Version, x.ModeName, x.Length, x.TimeStamp)
		for _, s := range x.Sections {
			fmt.Fprintf(w, "%s  section %-22s %-16q offset %d size %d\n", indent, s.KindName, s.Name, s.Offset, s.Size)
		}
		for _, m := range x.MemTopology {
			fmt.Fprintf(w, "%s  memory %q type %d used %v size %d KiB base %#x\n", indent, m.Tag, m.Type, m.Used, m.SizeKB, m.Base)
		}
		for _, ip := range x.IPLayout {
			fmt.Fprintf(w, "%s  ip %q type %d base %#x\n", indent, ip.Name, ip.Type, ip.Base)
		}
		for _, c := range x.Clocks {
			fmt.Fprintf(w, "%s  clock %q %d MHz type %d\n", indent, c.Name, c.FreqMHz, c.Type)
		}
		if v.XclbinBit != nil {
			writeBit(w, indent+"  BITSTREAM ", v.XclbinBit)
		}
		if v.XclbinBitError != "" {
			fmt.Fprintf(w, "%s  BITSTREAM is not a .bit: %s\n", indent, v.XclbinBitError)
		}
	}
	if e := v.EBPF; e != nil {
		fmt.Fprintf(w, "%sebpf: license %q\n", indent, e.License)
		for _, p := range e.Programs {
			fmt.Fprintf(w, "%s  program %s type %s section %s, %d instructions\n", indent, p.Name, p.Type, p.Section, p.Instructions)
		}
		for _, m := range e.Maps {
			fmt.Fprintf(w, "%s  map %s type %s key %d value %d max_entries %d\n", indent, m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries)
		}
	}
}

func writeBit(w *bytes.Buffer, indent string, b *bitstream.BitFile) {
	fmt.Fprintf(w, "%sxilinx-bit: design %q user_id %q tool %q part %q built %s %s\n", indent, b.DesignName, b.UserID, b.ToolVersion, b.Part, b.Date, b.Time)
	fmt.Fprintf(w, "%s  configuration data %d bytes at offset %d, sync word at data offset %d", indent, b.DataLength, b.DataOffset, b.SyncOffset)
	if b.Trailing > 0 {
		fmt.Fprintf(w, ", WARNING: %d bytes after the data", b.Trailing)
	}
	fmt.Fprintln(w)
}

func newImageVerifyCmd() *cobra.Command {
	var (
		trust  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "verify FILE --trust DIR",
		Short: "check an image's hashes and signature against a directory of trusted keys",
		Long: `verify parses FILE (checking every payload's SHA-256) and checks its ed25519
signature against the public keys (*.pub) in the trust directory. It exits
non-zero when the image is unsigned, signed by an untrusted key, or tampered
with.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trust == "" {
				return fmt.Errorf("--trust is required: %w", errUsage)
			}
			ring, err := bitstream.LoadKeyRing(trust)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			img, err := bitstream.Parse(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("verify %s: %w", args[0], err)
			}
			signer, verr := img.Verify(ring)
			if asJSON {
				res := map[string]any{"path": args[0], "id": img.ID(), "image": img.Ref(), "signer": signer, "trusted": verr == nil}
				if verr != nil {
					res["error"] = verr.Error()
				}
				if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else if verr == nil {
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "OK %s: %s, signed by trusted key %s\n", args[0], img, signer); err != nil {
					return err
				}
			}
			return verr
		},
	}
	cmd.Flags().StringVar(&trust, "trust", "", "directory of trusted public keys (*.pub)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
