package quality

import "errors"

// ErrOptions means evaluation options are out of range.
var ErrOptions = errors.New("invalid evaluation options")
