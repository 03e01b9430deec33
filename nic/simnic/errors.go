package simnic

import "errors"

// ErrConfig: options or a sim image's parameters the simulator cannot take
// (a queue depth that is not a power of two, a table entry larger than the
// table window). The previous configuration stays in effect.
var ErrConfig = errors.New("invalid simulator configuration")
