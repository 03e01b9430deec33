package bitstream

import (
	"bytes"
	"encoding/hex"
	"fmt"
)

// Report is what Inspect finds in a file: a kvloom image, or a bare vendor
// payload (.bit, xclbin2, eBPF object) before it is put into one.
type Report struct {
	Format string        `json:"format"` // "kvloom-image", "xilinx-bit", "xclbin2", "ebpf-elf"
	Image  *ImageReport  `json:"image,omitempty"`
	Vendor *VendorReport `json:"vendor,omitempty"` // set for bare vendor files
}

// ImageReport describes a kvloom image.
type ImageReport struct {
	ID       string          `json:"id"`
	Size     int64           `json:"size"`
	Signer   string          `json:"signer,omitempty"` // key id; empty when unsigned. Not verified: see Verify.
	Manifest Manifest        `json:"manifest"`
	Sections []SectionReport `json:"sections"`
}

// SectionReport describes one payload section and what its vendor parser
// found in it.
type SectionReport struct {
	Name   string        `json:"name"`
	Type   string        `json:"type"`
	Size   int           `json:"size"`
	SHA256 string        `json:"sha256"`
	Vendor *VendorReport `json:"vendor,omitempty"`
}

// VendorReport is what a vendor parser found. Error is set, and the others
// are nil, when the parser rejected the payload.
type VendorReport struct {
	Bit    *BitFile  `json:"bit,omitempty"`
	Xclbin *Xclbin   `json:"xclbin,omitempty"`
	EBPF   *EBPFInfo `json:"ebpf,omitempty"`
	// XclbinBit is the .bit header of an xclbin's BITSTREAM section, and
	// XclbinBitError why it could not be read as one.
	XclbinBit      *BitFile `json:"xclbin_bit,omitempty"`
	XclbinBitError string   `json:"xclbin_bit_error,omitempty"`
	Error          string   `json:"error,omitempty"`
}

// Inspect describes img and runs each vendor payload through its parser.
func Inspect(img *Image) *ImageReport {
	r := &ImageReport{ID: img.ID(), Size: img.Size(), Manifest: img.Manifest()}
	r.Signer, _ = img.Signer()
	for _, s := range img.sections {
		sr := SectionReport{Name: s.Name, Type: s.Type.String(), Size: len(s.Data), SHA256: hex.EncodeToString(s.SHA256[:])}
		if s.Type != PayloadRaw {
			vr, err := inspectVendor(s.Type, s.Data)
			if err != nil {
				vr = &VendorReport{Error: err.Error()}
			}
			sr.Vendor = vr
		}
		r.Sections = append(r.Sections, sr)
	}
	return r
}

func inspectVendor(t PayloadType, data []byte) (*VendorReport, error) {
	vr := &VendorReport{}
	var err error
	switch t {
	case PayloadXilinxBit:
		vr.Bit, err = ParseBit(data)
	case PayloadXclbin:
		vr.Xclbin, err = ParseXclbin(data)
		if err == nil {
			if s, ok := vr.Xclbin.Section(XclbinBitstream); ok {
				bf, berr := ParseBit(s.Data)
				if berr != nil {
					vr.XclbinBitError = berr.Error()
				}
				vr.XclbinBit = bf
			}
		}
	case PayloadEBPF:
		vr.EBPF, err = InspectEBPF(data)
	}
	if err != nil {
		return nil, err
	}
	return vr, nil
}

// InspectFile identifies data by its first bytes and describes it: a kvloom
// image (parsed, not verified), a Xilinx .bit file, an xclbin2 container or
// an eBPF ELF object.
func InspectFile(data []byte) (*Report, error) {
	switch {
	case bytes.HasPrefix(data, []byte(Magic)):
		img, err := Parse(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return &Report{Format: "kvloom-image", Image: Inspect(img)}, nil
	case bytes.HasPrefix(data, []byte(XclbinMagic)):
		return vendorReport("xclbin2", PayloadXclbin, data)
	case bytes.HasPrefix(data, bitPrefix[:4]):
		return vendorReport("xilinx-bit", PayloadXilinxBit, data)
	case bytes.HasPrefix(data, []byte("\x7fELF")):
		return vendorReport("ebpf-elf", PayloadEBPF, data)
	}
	return nil, &FormatError{Format: "file", Field: "magic", Offset: 0, Reason: "unknown file format",
		Value: fmt.Sprintf("%q", data[:min(len(data), 8)]), Limit: "a kvloom image, a .bit file, an xclbin2 or an ELF object"}
}

func vendorReport(format string, t PayloadType, data []byte) (*Report, error) {
	vr, err := inspectVendor(t, data)
	if err != nil {
		return nil, fmt.Errorf("inspect %s file: %w", format, err)
	}
	return &Report{Format: format, Vendor: vr}, nil
}
