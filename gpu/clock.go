package gpu

import (
	"context"
	"sync"
	"time"
)

// Clock paces the sim DMA backend. Times are durations since the clock's
// epoch.
type Clock interface {
	Now() time.Duration
	// SleepUntil returns once Now() ≥ t, or with ctx's error.
	SleepUntil(ctx context.Context, t time.Duration) error
}

// WallClock is real time: the sim backend then takes as long as the
// modelled link would.
type WallClock struct{ start time.Time }

// NewWallClock starts a wall clock at zero.
func NewWallClock() *WallClock { return &WallClock{start: time.Now()} }

// Now is the time since NewWallClock.
func (c *WallClock) Now() time.Duration { return time.Since(c.start) }

// SleepUntil sleeps until t.
func (c *WallClock) SleepUntil(ctx context.Context, t time.Duration) error {
	d := t - c.Now()
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// VirtualClock is simulated time, for tests and benchmarks that check the
// model without waiting for it. In jump mode (NewVirtualClock) SleepUntil
// moves the clock forward to t at once; in manual mode (NewManualClock) it
// blocks until Advance has moved the clock to t.
type VirtualClock struct {
	mu      sync.Mutex
	now     time.Duration
	manual  bool
	changed chan struct{} // closed and replaced on every Advance
}

// NewVirtualClock returns a clock at zero that jumps to each deadline.
func NewVirtualClock() *VirtualClock {
	return &VirtualClock{changed: make(chan struct{})}
}

// NewManualClock returns a clock at zero that only Advance moves.
func NewManualClock() *VirtualClock {
	return &VirtualClock{manual: true, changed: make(chan struct{})}
}

// Now is the simulated time.
func (c *VirtualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves a clock forward by d and wakes the sleepers it passes.
func (c *VirtualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now += d
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// SleepUntil jumps to t (jump mode) or waits for Advance to pass t.
func (c *VirtualClock) SleepUntil(ctx context.Context, t time.Duration) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.mu.Lock()
		if c.now >= t {
			c.mu.Unlock()
			return nil
		}
		if !c.manual {
			c.now = t
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	_ Clock = (*WallClock)(nil)
	_ Clock = (*VirtualClock)(nil)
)
