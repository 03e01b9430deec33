package topology

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors callers branch on. The errors Parse and Validate return
// wrap them (errors.Is) with the field, its line and the offending value.
var (
	// ErrSyntax: the file is not well-formed YAML, has a key this format does
	// not know, or a value of the wrong type.
	ErrSyntax = errors.New("topology syntax error")
	// ErrVersion: the file's version is missing or not one this package reads.
	ErrVersion = errors.New("unsupported topology version")
	// ErrUnknownPreset: a GPU model is neither a built-in preset nor defined
	// under gpu_models.
	ErrUnknownPreset = errors.New("unknown GPU preset")
	// ErrNegative: a bandwidth, capacity, latency or count is negative (or
	// zero where it must be positive).
	ErrNegative = errors.New("value out of range")
	// ErrDangling: a link, parent or device reference names nothing that
	// exists.
	ErrDangling = errors.New("reference to nowhere")
	// ErrDuplicate: two things share a name or address that must be unique.
	ErrDuplicate = errors.New("duplicate name")
	// ErrInvalid: any other semantic problem (unknown kind, malformed PCI
	// address, a cycle in the PCIe tree).
	ErrInvalid = errors.New("invalid topology")
)

// FieldError is one problem with one field. Line is the field's line in the
// file (zero when the topology was not parsed from a file).
type FieldError struct {
	Line int
	Path string // e.g. "hosts[0].gpus[2].model"
	Err  error  // wraps one of the sentinels
	path []any
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	b.WriteString(e.Path)
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// problems collects FieldErrors during validation.
type problems struct{ errs []*FieldError }

func (p *problems) add(path []any, sentinel error, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{
		Path: pathString(path),
		Err:  fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sentinel),
		path: append([]any(nil), path...),
	})
}

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func pathString(path []any) string {
	var b strings.Builder
	for _, el := range path {
		switch v := el.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(v)
		case int:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(v))
			b.WriteByte(']')
		}
	}
	if b.Len() == 0 {
		return "(file)"
	}
	return b.String()
}
