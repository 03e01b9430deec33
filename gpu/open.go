package gpu

import (
	"errors"
	"fmt"
	"log/slog"
)

// DMAOptions selects and configures a DMA backend. The zero value is
// "auto": CUDA where libcuda loads and has a device, sim otherwise.
type DMAOptions struct {
	// Backend is "auto" (or empty), "sim" or "cuda".
	Backend string
	CUDA    CUDAOptions
	Sim     SimOptions
	// Logger receives the one notice that CUDA is unavailable; nil means
	// slog.Default().
	Logger *slog.Logger
}

// OpenDMA opens the backend opts asks for. With "auto" a missing or unusable
// CUDA driver is logged once and the sim backend is used instead; with
// "cuda" it is an error wrapping ErrNoCUDA.
func OpenDMA(opts DMAOptions) (DMA, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	switch opts.Backend {
	case "sim":
		return NewSim(opts.Sim)
	case "cuda":
		return openCUDA(opts.CUDA)
	case "", "auto":
		d, err := openCUDA(opts.CUDA)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, ErrNoCUDA) {
			return nil, err
		}
		log.Warn("cuda_unavailable", "reason", err.Error(), "effect", "sim DMA backend")
		if opts.Sim.Logger == nil {
			opts.Sim.Logger = log
		}
		return NewSim(opts.Sim)
	}
	return nil, fmt.Errorf("DMA backend %q: want auto, sim or cuda: %w", opts.Backend, ErrBadRequest)
}
