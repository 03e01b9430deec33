package bitstream

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/semver"
)

// Kind is the family of target an image is built for.
type Kind string

// Image kinds.
const (
	KindFPGA Kind = "fpga" // an FPGA bitstream (.bit, raw PR bitstream) or Vitis xclbin
	KindXDP  Kind = "xdp"  // an eBPF ELF object for an XDP-capable NIC
	KindSim  Kind = "sim"  // parameters of the simulated accelerator
)

func (k Kind) valid() bool { return k == KindFPGA || k == KindXDP || k == KindSim }

// Manifest describes an image: what it is for, what it needs from the
// target, and how it was built. Its canonical JSON encoding
// (docs/bitstream.md) is what the image signature covers.
type Manifest struct {
	// Name identifies the image family: 1–64 of [a-z0-9._-], starting with
	// a letter or digit.
	Name string `json:"name"`
	// Version is a semantic version without the leading "v" ("1.4.0").
	Version string `json:"version"`
	Kind    Kind   `json:"kind"`
	Target  Target `json:"target"`
	// RegMap is the register-map version the image implements.
	RegMap  RegMapVersion `json:"regmap"`
	Matcher MatcherParams `json:"matcher"`
	// Params is a typed parameter block, sorted by name. Sim images carry
	// their pipeline here (see Pipeline); other kinds may carry extra
	// parameters a backend documents.
	Params []Param   `json:"params,omitempty"`
	Build  BuildInfo `json:"build"`
}

// Target names what the image must run on. Empty fields are not checked.
type Target struct {
	// Part is the device the image was built for: an FPGA part
	// ("xcu55c-fsvh2892-2L-e"), or "simnic" for sim images.
	Part string `json:"part,omitempty"`
	// Driver is the kernel driver or manager the device must expose: the
	// fpga_manager name ("Xilinx ZynqMP FPGA Manager"), a NIC driver for
	// XDP offload ("nfp"), or an XRT platform VBNV.
	Driver string `json:"driver,omitempty"`
	// InterfaceID is the static region's interface UUID the image was built
	// against (DFL compat_id, xclbin interface UUID): 32 lowercase hex
	// digits.
	InterfaceID string `json:"interface_id,omitempty"`
	// AcceleratorID is the UUID the device reports once the image is live
	// (the DFL port's afu_id): 32 lowercase hex digits.
	AcceleratorID string `json:"accelerator_id,omitempty"`
	// Partial marks a partial-reconfiguration bitstream.
	Partial bool `json:"partial,omitempty"`
}

// RegMapVersion is a register-map version. A driver that speaks M.m can
// drive an image that implements M.n for any n ≥ m.
type RegMapVersion struct {
	Major uint16 `json:"major"`
	Minor uint16 `json:"minor"`
}

func (v RegMapVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// ParseRegMapVersion parses "M.m".
func ParseRegMapVersion(s string) (RegMapVersion, error) {
	maj, min, ok := strings.Cut(s, ".")
	if !ok {
		return RegMapVersion{}, fmt.Errorf("parse register-map version %q: want MAJOR.MINOR", s)
	}
	a, err1 := strconv.ParseUint(maj, 10, 16)
	b, err2 := strconv.ParseUint(min, 10, 16)
	if err1 != nil || err2 != nil {
		return RegMapVersion{}, fmt.Errorf("parse register-map version %q: want two integers 0–65535", s)
	}
	return RegMapVersion{Major: uint16(a), Minor: uint16(b)}, nil
}

// MatcherParams are the matching parameters the image's logic implements.
// The control plane must use the same ones, or keys and anchors differ.
type MatcherParams struct {
	AnchorWindow  int `json:"anchor_window"`  // tokens in the rolling-hash window that picks anchors
	KGram         int `json:"kgram"`          // tokens hashed at each anchor
	MinMatch      int `json:"min_match"`      // shortest reported match, tokens
	BlockTokens   int `json:"block_tokens"`   // prefix block size, tokens
	ChunkTokens   int `json:"chunk_tokens"`   // longest chunk a table entry holds, tokens
	TableCapacity int `json:"table_capacity"` // hot index entries the table holds
}

// Param is one typed parameter. Exactly one of Int, Float, Bool and Str is
// set; use IntParam, FloatParam, BoolParam or StrParam to build one.
type Param struct {
	Name  string   `json:"name"`
	Unit  string   `json:"unit,omitempty"`
	Int   *int64   `json:"int,omitempty"`
	Float *float64 `json:"float,omitempty"`
	Bool  *bool    `json:"bool,omitempty"`
	Str   *string  `json:"str,omitempty"`
}

// IntParam returns an integer parameter.
func IntParam(name, unit string, v int64) Param { return Param{Name: name, Unit: unit, Int: &v} }

// FloatParam returns a floating-point parameter.
func FloatParam(name, unit string, v float64) Param { return Param{Name: name, Unit: unit, Float: &v} }

// BoolParam returns a boolean parameter.
func BoolParam(name string, v bool) Param { return Param{Name: name, Bool: &v} }

// StrParam returns a string parameter.
func StrParam(name, unit, v string) Param { return Param{Name: name, Unit: unit, Str: &v} }

// Type returns "int", "float", "bool" or "str", or "" when no value (or
// more than one) is set.
func (p Param) Type() string {
	n, t := 0, ""
	if p.Int != nil {
		n, t = n+1, "int"
	}
	if p.Float != nil {
		n, t = n+1, "float"
	}
	if p.Bool != nil {
		n, t = n+1, "bool"
	}
	if p.Str != nil {
		n, t = n+1, "str"
	}
	if n != 1 {
		return ""
	}
	return t
}

// Value returns the parameter's value as text.
func (p Param) Value() string {
	switch p.Type() {
	case "int":
		return strconv.FormatInt(*p.Int, 10)
	case "float":
		return strconv.FormatFloat(*p.Float, 'g', -1, 64)
	case "bool":
		return strconv.FormatBool(*p.Bool)
	case "str":
		return *p.Str
	}
	return ""
}

func (p Param) clone() Param {
	q := Param{Name: p.Name, Unit: p.Unit}
	if p.Int != nil {
		v := *p.Int
		q.Int = &v
	}
	if p.Float != nil {
		v := *p.Float
		q.Float = &v
	}
	if p.Bool != nil {
		v := *p.Bool
		q.Bool = &v
	}
	if p.Str != nil {
		v := *p.Str
		q.Str = &v
	}
	return q
}

// BuildInfo records how the image was built.
type BuildInfo struct {
	// Time is when the image was built, RFC 3339 in UTC with second
	// precision ("2025-01-02T15:04:05Z").
	Time    string `json:"time"`
	Tool    string `json:"tool,omitempty"`    // what produced the payload and image ("vivado 2023.2; kvloom v0.3.0")
	Source  string `json:"source,omitempty"`  // source revision or URL
	Builder string `json:"builder,omitempty"` // who or what built it (CI job, user)
}

// Pipeline is the simulated accelerator's pipeline, carried by sim images
// as the well-known parameters of the manifest's Params (docs/bitstream.md
// lists them with their units).
type Pipeline struct {
	ClockMHz             float64 // clock_mhz, MHz
	Lanes                int     // lanes, tokens per cycle
	LookupLatencyCycles  int     // lookup_latency_cycles, cycles per table lookup
	RequestQueueDepth    int     // request_queue_depth, descriptors
	CompletionQueueDepth int     // completion_queue_depth, descriptors
	PCIeGbps             float64 // pcie_gbps, Gbit/s host link
	NetworkGbps          float64 // network_gbps, Gbit/s network link
}

// Well-known pipeline parameter names.
const (
	ParamClockMHz             = "clock_mhz"
	ParamLanes                = "lanes"
	ParamLookupLatencyCycles  = "lookup_latency_cycles"
	ParamRequestQueueDepth    = "request_queue_depth"
	ParamCompletionQueueDepth = "completion_queue_depth"
	ParamPCIeGbps             = "pcie_gbps"
	ParamNetworkGbps          = "network_gbps"
)

// pipelineParam is one well-known pipeline parameter: its type, unit and range.
type pipelineParam struct {
	name, typ, unit string
	min, max        float64
}

var pipelineParams = [...]pipelineParam{
	{ParamClockMHz, "float", "MHz", 1, 10000},
	{ParamCompletionQueueDepth, "int", "descriptors", 1, 1 << 20},
	{ParamLanes, "int", "tokens/cycle", 1, 4096},
	{ParamLookupLatencyCycles, "int", "cycles", 0, 1 << 20},
	{ParamNetworkGbps, "float", "Gbit/s", 0.001, 100000},
	{ParamPCIeGbps, "float", "Gbit/s", 0.001, 100000},
	{ParamRequestQueueDepth, "int", "descriptors", 1, 1 << 20},
}

// PipelineParamType returns the type ("int" or "float") and unit of a
// well-known pipeline parameter, and false for other names.
func PipelineParamType(name string) (typ, unit string, ok bool) {
	for _, pp := range pipelineParams {
		if pp.name == name {
			return pp.typ, pp.unit, true
		}
	}
	return "", "", false
}

// Params returns the pipeline as manifest parameters, sorted by name.
func (p Pipeline) Params() []Param {
	ps := []Param{
		FloatParam(ParamClockMHz, "MHz", p.ClockMHz),
		IntParam(ParamCompletionQueueDepth, "descriptors", int64(p.CompletionQueueDepth)),
		IntParam(ParamLanes, "tokens/cycle", int64(p.Lanes)),
		IntParam(ParamLookupLatencyCycles, "cycles", int64(p.LookupLatencyCycles)),
		FloatParam(ParamNetworkGbps, "Gbit/s", p.NetworkGbps),
		FloatParam(ParamPCIeGbps, "Gbit/s", p.PCIeGbps),
		IntParam(ParamRequestQueueDepth, "descriptors", int64(p.RequestQueueDepth)),
	}
	return ps
}

// PipelineFromParams reads the well-known pipeline parameters from ps. Every
// one must be present with its documented type, unit and range; other
// parameters are ignored.
func PipelineFromParams(ps []Param) (Pipeline, error) {
	var errs []error
	vals := make(map[string]float64, len(pipelineParams))
	for _, pp := range pipelineParams {
		i := slices.IndexFunc(ps, func(p Param) bool { return p.Name == pp.name })
		field := "params." + pp.name
		if i < 0 {
			errs = append(errs, manifestErr(field, "missing pipeline parameter", "", pp.typ+" in "+pp.unit))
			continue
		}
		p := ps[i]
		if p.Type() != pp.typ {
			errs = append(errs, manifestErr(field, "wrong parameter type", p.Type(), pp.typ))
			continue
		}
		if p.Unit != pp.unit {
			errs = append(errs, manifestErr(field, "wrong unit", strconv.Quote(p.Unit), strconv.Quote(pp.unit)))
			continue
		}
		var v float64
		if p.Int != nil {
			v = float64(*p.Int)
		} else {
			v = *p.Float
		}
		if !(v >= pp.min && v <= pp.max) {
			errs = append(errs, manifestErr(field, "out of range", p.Value(), fmt.Sprintf("%g–%g", pp.min, pp.max)))
			continue
		}
		vals[pp.name] = v
	}
	if err := errors.Join(errs...); err != nil {
		return Pipeline{}, err
	}
	return Pipeline{
		ClockMHz:             vals[ParamClockMHz],
		Lanes:                int(vals[ParamLanes]),
		LookupLatencyCycles:  int(vals[ParamLookupLatencyCycles]),
		RequestQueueDepth:    int(vals[ParamRequestQueueDepth]),
		CompletionQueueDepth: int(vals[ParamCompletionQueueDepth]),
		PCIeGbps:             vals[ParamPCIeGbps],
		NetworkGbps:          vals[ParamNetworkGbps],
	}, nil
}

// Limits of the manifest encoding.
const (
	MaxManifestSize = 64 << 10 // bytes of canonical JSON
	maxParams       = 128
	maxStringLen    = 256
	maxUnitLen      = 32
)

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	paramNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

func manifestErr(field, reason, value, limit string) error {
	return &FormatError{Format: "manifest", Field: field, Offset: -1, Reason: reason, Value: value, Limit: limit}
}

// Validate reports every problem of m at once (errors.Join of
// *FormatError).
func (m Manifest) Validate() error {
	var errs []error
	add := func(field, reason, value, limit string) {
		errs = append(errs, manifestErr(field, reason, value, limit))
	}
	if !nameRE.MatchString(m.Name) {
		add("name", "invalid image name", strconv.Quote(m.Name), "1–64 of [a-z0-9._-] starting with a letter or digit")
	}
	if !isSemVer(m.Version) {
		add("version", "not a semantic version", strconv.Quote(m.Version), "MAJOR.MINOR.PATCH[-pre][+build] without a leading v")
	}
	if !m.Kind.valid() {
		add("kind", "unknown image kind", strconv.Quote(string(m.Kind)), "fpga, xdp or sim")
	}
	checkStr := func(field, s string) {
		if err := checkText(s, maxStringLen); err != "" {
			add(field, err, strconv.Quote(truncate(s, 40)), fmt.Sprintf("printable text of at most %d bytes", maxStringLen))
		}
	}
	checkStr("target.part", m.Target.Part)
	checkStr("target.driver", m.Target.Driver)
	for _, f := range [...]struct{ field, id string }{
		{"target.interface_id", m.Target.InterfaceID},
		{"target.accelerator_id", m.Target.AcceleratorID},
	} {
		if f.id != "" && !isCanonicalUUID(f.id) {
			add(f.field, "not a canonical UUID", strconv.Quote(truncate(f.id, 40)), "32 lowercase hex digits without dashes")
		}
	}
	mp := m.Matcher
	for _, r := range []struct {
		field    string
		v, lo, h int
	}{
		{"matcher.anchor_window", mp.AnchorWindow, 1, 4096},
		{"matcher.kgram", mp.KGram, 1, 4096},
		{"matcher.min_match", mp.MinMatch, 1, 1 << 20},
		{"matcher.block_tokens", mp.BlockTokens, 1, 1 << 16},
		{"matcher.chunk_tokens", mp.ChunkTokens, 1, 1 << 24},
		{"matcher.table_capacity", mp.TableCapacity, 1, 1 << 31},
	} {
		if r.v < r.lo || r.v > r.h {
			add(r.field, "out of range", strconv.Itoa(r.v), fmt.Sprintf("%d–%d", r.lo, r.h))
		}
	}
	if mp.ChunkTokens > 0 && mp.MinMatch > mp.ChunkTokens {
		add("matcher.chunk_tokens", "shorter than min_match", strconv.Itoa(mp.ChunkTokens), fmt.Sprintf("≥ %d", mp.MinMatch))
	}
	if len(m.Params) > maxParams {
		add("params", "too many parameters", strconv.Itoa(len(m.Params)), fmt.Sprintf("≤ %d", maxParams))
	}
	for i, p := range m.Params {
		field := fmt.Sprintf("params[%d]", i)
		if !paramNameRE.MatchString(p.Name) {
			add(field+".name", "invalid parameter name", strconv.Quote(truncate(p.Name, 40)), "1–64 of [a-z0-9_] starting with a letter")
		}
		if i > 0 && m.Params[i-1].Name >= p.Name {
			add(field+".name", "parameters not sorted by name or name repeated", strconv.Quote(p.Name), "greater than "+strconv.Quote(m.Params[i-1].Name))
		}
		if err := checkText(p.Unit, maxUnitLen); err != "" {
			add(field+".unit", err, strconv.Quote(truncate(p.Unit, 40)), fmt.Sprintf("printable text of at most %d bytes", maxUnitLen))
		}
		switch p.Type() {
		case "":
			add(field, "exactly one of int, float, bool, str must be set", "", "")
		case "float":
			if math.IsNaN(*p.Float) || math.IsInf(*p.Float, 0) {
				add(field+".float", "not a finite number", p.Value(), "")
			}
		case "str":
			if err := checkText(*p.Str, maxStringLen); err != "" {
				add(field+".str", err, strconv.Quote(truncate(*p.Str, 40)), fmt.Sprintf("printable text of at most %d bytes", maxStringLen))
			}
		}
	}
	if m.Kind == KindSim {
		if _, err := PipelineFromParams(m.Params); err != nil {
			errs = append(errs, err)
		}
	}
	if t, err := time.Parse(time.RFC3339, m.Build.Time); err != nil || t.UTC().Format(time.RFC3339) != m.Build.Time {
		add("build.time", "not an RFC 3339 UTC time with second precision", strconv.Quote(truncate(m.Build.Time, 40)), `"2006-01-02T15:04:05Z"`)
	}
	checkStr("build.tool", m.Build.Tool)
	checkStr("build.source", m.Build.Source)
	checkStr("build.builder", m.Build.Builder)
	return errors.Join(errs...)
}

// isSemVer reports whether s is a full semantic version (MAJOR.MINOR.PATCH,
// optional pre-release and build metadata) without a leading "v".
// x/mod/semver also accepts the shorthands "1" and "1.2", which SemVer does
// not: comparing with the canonical form rejects them.
func isSemVer(s string) bool {
	v := "v" + s
	core, _, _ := strings.Cut(v, "+")
	return !strings.HasPrefix(s, "v") && semver.IsValid(v) && semver.Canonical(v) == core
}

// checkText returns why s is not acceptable manifest text, or "".
func checkText(s string, max int) string {
	if len(s) > max {
		return "too long"
	}
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "contains a non-printable character"
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func isCanonicalUUID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// NormalizeUUID turns a UUID in any common spelling (dashes or not, upper or
// lower case, as sysfs compat_id, XRT and GBS metadata write them) into the
// manifest's canonical 32 lowercase hex digits.
func NormalizeUUID(s string) (string, error) {
	t := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
	if !isCanonicalUUID(t) {
		return "", fmt.Errorf("normalize uuid %q: want 32 hex digits", truncate(s, 40))
	}
	return t, nil
}

// Clone returns a deep copy of m.
func (m Manifest) Clone() Manifest {
	c := m
	if m.Params != nil {
		c.Params = make([]Param, len(m.Params))
		for i, p := range m.Params {
			c.Params[i] = p.clone()
		}
	}
	return c
}

// Param returns the parameter called name.
func (m Manifest) Param(name string) (Param, bool) {
	i := slices.IndexFunc(m.Params, func(p Param) bool { return p.Name == name })
	if i < 0 {
		return Param{}, false
	}
	return m.Params[i].clone(), true
}

// SortParams sorts m.Params by name, as Validate requires.
func (m *Manifest) SortParams() {
	slices.SortFunc(m.Params, func(a, b Param) int { return strings.Compare(a.Name, b.Name) })
}

// MarshalCanonical validates m and returns its canonical JSON encoding: the
// fields in declaration order, no insignificant white space, no HTML
// escaping, absent optional fields omitted. Two equal manifests always
// encode to the same bytes.
func (m Manifest) MarshalCanonical() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := encodeJSON(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	if len(b) > MaxManifestSize {
		return nil, manifestErr("manifest", "canonical encoding too large", strconv.Itoa(len(b))+" bytes", fmt.Sprintf("≤ %d bytes", MaxManifestSize))
	}
	return b, nil
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalManifest decodes a manifest written by hand or by another tool:
// any JSON layout is accepted, unknown fields are not, and the result is
// validated. Params are sorted first.
func UnmarshalManifest(data []byte) (Manifest, error) {
	m, err := decodeManifest(data)
	if err != nil {
		return Manifest{}, err
	}
	m.SortParams()
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// DecodeManifest decodes a JSON manifest like UnmarshalManifest but does
// not validate it: for templates that flags complete before Build, which
// validates.
func DecodeManifest(data []byte) (Manifest, error) {
	m, err := decodeManifest(data)
	m.SortParams()
	return m, err
}

func decodeManifest(data []byte) (Manifest, error) {
	if len(data) > MaxManifestSize {
		return Manifest{}, manifestErr("manifest", "too large", strconv.Itoa(len(data))+" bytes", fmt.Sprintf("≤ %d bytes", MaxManifestSize))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		return Manifest{}, &FormatError{Format: "manifest", Field: "json", Offset: off, Reason: "cannot decode: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Manifest{}, &FormatError{Format: "manifest", Field: "json", Offset: dec.InputOffset(), Reason: "data after the manifest object"}
	}
	if len(m.Params) == 0 {
		m.Params = nil // "params": [] and no params are the same manifest
	}
	return m, nil
}

// decodeCanonical decodes the manifest of an image: it must be valid and
// byte for byte its own canonical encoding.
func decodeCanonical(data []byte, base int64) (Manifest, error) {
	m, err := decodeManifest(data)
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) && fe.Offset >= 0 {
			fe.Offset += base
		}
		return Manifest{}, err
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	canon, err := encodeJSON(m)
	if err != nil {
		return Manifest{}, fmt.Errorf("encode manifest: %w", err)
	}
	if !bytes.Equal(canon, data) {
		i := 0
		for i < len(canon) && i < len(data) && canon[i] == data[i] {
			i++
		}
		return Manifest{}, &FormatError{Format: "image", Field: "manifest", Offset: base + int64(i),
			Reason: "not in canonical form", Value: strconv.Quote(truncate(string(data[i:]), 24)), Limit: strconv.Quote(truncate(string(canon[min(i, len(canon)):]), 24))}
	}
	return m, nil
}

// hexShort returns the first n bytes of b in hex.
func hexShort(b []byte, n int) string { return hex.EncodeToString(b[:min(n, len(b))]) }
