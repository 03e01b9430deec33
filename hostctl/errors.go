package hostctl

import "errors"

// Sentinel errors callers branch on. Returned errors wrap them with detail
// (the field, value and limit at fault). The gRPC edge maps them to status
// codes in one place (grpcStatus).
var (
	// ErrConfig: the configuration is invalid (FieldError names each
	// problem with its file and line).
	ErrConfig = errors.New("invalid configuration")
	// ErrBadRequest: a request is malformed (no tokens, a token outside the
	// model's vocabulary, a layer out of range, bytes that do not match the
	// model's KV shape).
	ErrBadRequest = errors.New("bad request")
	// ErrUnknownModel: the request names a model the daemon does not serve.
	ErrUnknownModel = errors.New("unknown model")
	// ErrTooLarge: a request beyond a size limit (tokens, bytes).
	ErrTooLarge = errors.New("request too large")
	// ErrQuota: a tenant's quota (bytes stored, requests in flight) is
	// exhausted.
	ErrQuota = errors.New("tenant quota exceeded")
	// ErrOverloaded: the daemon sheds load (requests in flight, segment
	// memory, a full write-back queue).
	ErrOverloaded = errors.New("daemon overloaded")
	// ErrPermission: the caller may not do this (a tenant that is not the
	// certificate's, shared writes disabled, a peer without the token).
	ErrPermission = errors.New("permission denied")
	// ErrNotFound: no such segment or chunk.
	ErrNotFound = errors.New("not found")
	// ErrNoDevice: the call needs an accelerator and none is up.
	ErrNoDevice = errors.New("no accelerator device")
	// ErrShutdown: the daemon is shutting down.
	ErrShutdown = errors.New("daemon shutting down")
	// ErrBackend: a backend the configuration marks required failed.
	ErrBackend = errors.New("required backend unavailable")
)
