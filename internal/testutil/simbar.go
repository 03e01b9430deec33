package testutil

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// BARServer is a register model serving a card's BAR until its context
// ends, as nic/simnic's Model does over a BAR file from AddBARFile.
// testutil takes the interface rather than importing nic/simnic: kvcache,
// sim and sim/topology, which simnic imports, use testutil in their
// in-package tests, so the import would be a cycle.
type BARServer interface {
	Serve(ctx context.Context) error
	// Close releases the BAR; it is called after Serve has returned.
	Close() error
}

// ServeBAR runs m.Serve on a goroutine until the test ends; cleanup stops
// it, waits for it and closes m, failing the test if Serve or Close fails.
func ServeBAR(t testing.TB, m BARServer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := m.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve simulated card: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := m.Close(); err != nil {
			t.Errorf("close simulated card: %v", err)
		}
	})
}
