package bitstream

import (
	"errors"
	"strconv"
	"strings"
)

// Requirements are what the control plane needs from any image it loads,
// whatever the target. Zero fields are not checked.
type Requirements struct {
	// RegMap is the register-map version the driver speaks: an image must
	// implement the same major version and at least this minor version.
	RegMap RegMapVersion
	// Matcher holds the parameters the control plane matches with. Every
	// non-zero field except TableCapacity must equal the image's;
	// TableCapacity is the least table the control plane needs.
	Matcher MatcherParams
}

// Check reports every way m falls short of r (errors.Join of
// *IncompatibleError).
func (r Requirements) Check(m Manifest) error {
	var errs []error
	if r.RegMap != (RegMapVersion{}) && (m.RegMap.Major != r.RegMap.Major || m.RegMap.Minor < r.RegMap.Minor) {
		errs = append(errs, &IncompatibleError{Field: "regmap", Image: m.RegMap.String(), Target: r.RegMap.String(),
			Reason: "the driver needs the same major version and at least its minor version"})
	}
	for _, f := range [...]struct {
		name      string
		img, want int
	}{
		{"matcher.anchor_window", m.Matcher.AnchorWindow, r.Matcher.AnchorWindow},
		{"matcher.kgram", m.Matcher.KGram, r.Matcher.KGram},
		{"matcher.min_match", m.Matcher.MinMatch, r.Matcher.MinMatch},
		{"matcher.block_tokens", m.Matcher.BlockTokens, r.Matcher.BlockTokens},
		{"matcher.chunk_tokens", m.Matcher.ChunkTokens, r.Matcher.ChunkTokens},
	} {
		if f.want != 0 && f.img != f.want {
			errs = append(errs, &IncompatibleError{Field: f.name, Image: strconv.Itoa(f.img), Target: strconv.Itoa(f.want),
				Reason: "the control plane matches with a different value, so keys or anchors would differ"})
		}
	}
	if r.Matcher.TableCapacity != 0 && m.Matcher.TableCapacity < r.Matcher.TableCapacity {
		errs = append(errs, &IncompatibleError{Field: "matcher.table_capacity", Image: strconv.Itoa(m.Matcher.TableCapacity),
			Target: strconv.Itoa(r.Matcher.TableCapacity), Reason: "the table is smaller than the control plane needs"})
	}
	return errors.Join(errs...)
}

// identity is what a loader discovered about its device. Empty fields are
// unknown and not checked.
type identity struct {
	Kind        Kind
	Part        string // FPGA part, or "simnic"
	Driver      string // fpga_manager name, NIC driver, XRT platform VBNV
	InterfaceID string // 32 lowercase hex digits
}

// checkIdentity reports every way m does not fit the discovered device.
func checkIdentity(m Manifest, id identity) error {
	var errs []error
	if m.Kind != id.Kind {
		errs = append(errs, &IncompatibleError{Field: "kind", Image: string(m.Kind), Target: string(id.Kind)})
	}
	if m.Target.Part != "" && id.Part != "" && !PartsMatch(m.Target.Part, id.Part) {
		errs = append(errs, &IncompatibleError{Field: "target.part", Image: m.Target.Part, Target: id.Part})
	}
	if m.Target.Driver != "" && id.Driver != "" && m.Target.Driver != id.Driver {
		errs = append(errs, &IncompatibleError{Field: "target.driver", Image: m.Target.Driver, Target: id.Driver})
	}
	if m.Target.InterfaceID != "" && id.InterfaceID != "" && m.Target.InterfaceID != id.InterfaceID {
		errs = append(errs, &IncompatibleError{Field: "target.interface_id", Image: m.Target.InterfaceID, Target: id.InterfaceID,
			Reason: "the image was built against another static region (shell)"})
	}
	return errors.Join(errs...)
}

// PartsMatch reports whether two spellings of an FPGA part name the same
// device. Case is ignored, and so are a leading "xc" and dashes, and one may
// omit the speed grade and temperature suffix the other has: ".bit" headers
// write "7a35tcsg324", board files "xc7a35tcsg324-1".
func PartsMatch(a, b string) bool {
	na, nb := normPart(a), normPart(b)
	if na == "" || nb == "" {
		return false
	}
	return strings.HasPrefix(na, nb) || strings.HasPrefix(nb, na)
}

func normPart(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "xc")
	return strings.ReplaceAll(s, "-", "")
}
