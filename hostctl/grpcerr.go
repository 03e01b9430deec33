package hostctl

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/store"
)

// grpcStatus maps an error to its gRPC status: the one place where the
// daemon's and its packages' sentinels become codes (docs/api.md lists
// them). The message keeps the whole wrapped chain, which names the field,
// value and limit at fault.
func grpcStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, ErrShutdown), errors.Is(err, store.ErrClosed), errors.Is(err, nic.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, ErrPermission),
		errors.Is(err, bitstream.ErrUnsigned), errors.Is(err, bitstream.ErrUntrusted), errors.Is(err, bitstream.ErrBadSignature):
		return codes.PermissionDenied
	case errors.Is(err, ErrQuota), errors.Is(err, ErrOverloaded),
		errors.Is(err, store.ErrQueueFull), errors.Is(err, store.ErrFull), errors.Is(err, nic.ErrQueueFull):
		return codes.ResourceExhausted
	case errors.Is(err, ErrUnknownModel), errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrNoDevice), errors.Is(err, bitstream.ErrIncompatible), errors.Is(err, nic.ErrIncompatibleImage):
		return codes.FailedPrecondition
	case errors.Is(err, ErrTooLarge), errors.Is(err, matcher.ErrTooLong), errors.Is(err, store.ErrTooLarge):
		return codes.OutOfRange
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrConfig),
		errors.Is(err, matcher.ErrEmpty), errors.Is(err, matcher.ErrTokenRange), errors.Is(err, matcher.ErrTooShort),
		errors.Is(err, matcher.ErrTooManyCandidates), errors.Is(err, matcher.ErrBadKey),
		errors.Is(err, kvcache.ErrPolicy), errors.Is(err, kvcache.ErrShape), errors.Is(err, kvcache.ErrLayerRange),
		errors.Is(err, bitstream.ErrMalformed), errors.Is(err, nic.ErrBadRequest):
		return codes.InvalidArgument
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, nic.ErrDeviceFault), errors.Is(err, nic.ErrTimeout):
		return codes.Unavailable
	}
	return codes.Internal
}
