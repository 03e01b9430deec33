package pciid

import (
	"errors"
	"fmt"
)

// ErrMalformed: a bus id (or, in gpu, a sysfs file) did not have the
// documented format.
var ErrMalformed = errors.New("malformed input")

// ParseError says which input was malformed, where, and why. It Is
// ErrMalformed. gpu's sysfs parsers report their errors with it too (as
// gpu.ParseError), so a bad bus id and a bad sysfs file read alike.
type ParseError struct {
	What   string // what was being parsed, e.g. "link speed", "resource line 3"
	Offset int    // byte offset into the input where the problem is, -1 if not applicable
	Value  string // the offending text (truncated)
	Reason string
}

func (e *ParseError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	if e.Offset >= 0 {
		return fmt.Sprintf("parse %s at offset %d (%q): %s", e.What, e.Offset, v, e.Reason)
	}
	return fmt.Sprintf("parse %s (%q): %s", e.What, v, e.Reason)
}

// Is reports ErrMalformed.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }
