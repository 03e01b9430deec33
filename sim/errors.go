package sim

import "errors"

// Sentinel errors callers branch on; returned errors wrap them with the
// field, value and limit that were wrong.
var (
	// ErrUnknownModel: a model, GPU or link name is not a preset.
	ErrUnknownModel = errors.New("unknown model")
	// ErrConfig: options out of range (tensor parallelism, fractions, a
	// topology that cannot serve the model, …).
	ErrConfig = errors.New("invalid simulation config")
	// ErrTrace: a trace file is malformed (the error names the line and
	// field).
	ErrTrace = errors.New("malformed trace")
	// ErrPipeline: an accelerator pipeline parameter is out of range.
	ErrPipeline = errors.New("invalid accelerator pipeline")
)
