//go:build !linux

package gpu

import "fmt"

// CUDAOptions configures the CUDA backend, which exists on Linux only.
type CUDAOptions struct {
	Library        string
	Device         int
	BusID          string
	PoolBytes      int
	ChunkBytes     int
	StagingWorkers int
}

func openCUDA(CUDAOptions) (DMA, error) {
	return nil, fmt.Errorf("CUDA DMA: %w: %w", ErrNotSupported, ErrNoCUDA)
}
