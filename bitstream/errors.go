package bitstream

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors callers branch on. Returned errors wrap them with detail.
var (
	// ErrMalformed: input (an image, a manifest, a vendor payload, a key
	// file) does not follow its format. The error is a *FormatError naming
	// the field, offset, value and limit.
	ErrMalformed = errors.New("malformed input")
	// ErrHashMismatch: a payload section's bytes do not match the SHA-256
	// recorded in the section table (corruption or tampering).
	ErrHashMismatch = errors.New("payload hash mismatch")
	// ErrUnsigned: the image carries no signature.
	ErrUnsigned = errors.New("image is unsigned")
	// ErrUntrusted: the image is signed by a key that is not in the trust
	// directory.
	ErrUntrusted = errors.New("image signer is not trusted")
	// ErrBadSignature: the image's signature does not verify under the key
	// it names. Never admitted, not even in insecure mode.
	ErrBadSignature = errors.New("image signature does not verify")
	// ErrIncompatible: the image does not fit the target (kind, part,
	// interface, register map, matcher parameters). Nothing was touched.
	ErrIncompatible = errors.New("image incompatible with target")
	// ErrNotSupported: the target cannot be programmed this way on this
	// system (for example an upstream kernel's fpga_manager, which has no
	// firmware attribute).
	ErrNotSupported = errors.New("not supported on this system")
	// ErrToolMissing: a vendor tool the loader needs (xrt-smi, xbutil) is
	// not installed.
	ErrToolMissing = errors.New("required tool not installed")
	// ErrNoDevice: the loader found no device to program under its root.
	ErrNoDevice = errors.New("no device found")
	// ErrLoadFailed: the device reported that programming failed.
	ErrLoadFailed = errors.New("device reported a failed load")
	// ErrTargetUnchanged is wrapped by a Loader's error when the load failed
	// before the target was changed, so the previous image is still live
	// and no restore is needed.
	ErrTargetUnchanged = errors.New("target unchanged")
)

// FormatError reports where and why input does not follow its format. It Is
// ErrMalformed, and Is Err when Err is set.
type FormatError struct {
	Format string // "image", "manifest", "xilinx-bit", "xclbin2", "ebpf-elf", "key"
	Field  string // the field that is wrong
	Offset int64  // byte offset of the field in the input; -1 when it has none
	Reason string // what is wrong, as a phrase: "runs past the end of the input"
	Value  string // what was found; empty when it says nothing
	Limit  string // what was allowed or expected; empty when it says nothing
	Err    error  // a more specific sentinel (ErrHashMismatch), or nil
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString(e.Format)
	b.WriteString(": ")
	b.WriteString(e.Field)
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " at offset %d (0x%x)", e.Offset, e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	switch {
	case e.Value != "" && e.Limit != "":
		fmt.Fprintf(&b, " (got %s, want %s)", e.Value, e.Limit)
	case e.Value != "":
		fmt.Fprintf(&b, " (got %s)", e.Value)
	case e.Limit != "":
		fmt.Fprintf(&b, " (want %s)", e.Limit)
	}
	return b.String()
}

// Is reports whether target is ErrMalformed or the error's own sentinel.
func (e *FormatError) Is(target error) bool {
	return target == ErrMalformed || (e.Err != nil && target == e.Err)
}

// Unwrap returns the specific sentinel, if any.
func (e *FormatError) Unwrap() error { return e.Err }

// IncompatibleError names one way an image does not fit a target. It Is
// ErrIncompatible.
type IncompatibleError struct {
	Field  string // "kind", "target.part", "regmap", "matcher.block_tokens", …
	Image  string // the image's value
	Target string // what the target has or needs
	Reason string // optional detail
}

func (e *IncompatibleError) Error() string {
	msg := fmt.Sprintf("%s: image has %q, target has %q", e.Field, e.Image, e.Target)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is reports whether target is ErrIncompatible.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }
