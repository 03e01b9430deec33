package workload

import "errors"

// Sentinel errors callers branch on.
var (
	// ErrNoCorpus: the Go distribution (or the given directory) could not
	// be found or holds no usable text.
	ErrNoCorpus = errors.New("no corpus")
	// ErrPromptsFile: a prompts file line is not a valid prompt.
	ErrPromptsFile = errors.New("malformed prompts file")
)
