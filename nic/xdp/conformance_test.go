//go:build linux

package xdp

import (
	"testing"

	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/nictest"
)

// harness opens XDP devices for the conformance suite with opts as the
// base; the suite's Config shapes the table and queues.
func harness(opts func(t *testing.T) Options) nictest.Harness {
	return nictest.Harness{Open: func(t *testing.T, c nictest.Config) nic.Device {
		requireBPF(t)
		o := opts(t)
		o.TableCapacity = c.TableCapacity
		o.RequestQueueDepth = c.RequestQueueDepth
		o.EventBuffer = c.CompletionQueueDepth
		d, err := Open(t.Context(), o)
		if err != nil {
			t.Fatalf("open xdp device: %v", err)
		}
		return d
	}}
}

// TestConformance runs nic's conformance suite against the XDP backend with
// the program loaded but not attached: every request goes through the
// kernel program by BPF_PROG_TEST_RUN.
func TestConformance(t *testing.T) {
	nictest.Run(t, harness(func(*testing.T) Options { return Options{} }))
}
