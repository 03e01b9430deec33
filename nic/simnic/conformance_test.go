package simnic_test

import (
	"testing"

	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/nictest"
	"github.com/kvloom/kvloom/nic/simnic"
	"github.com/kvloom/kvloom/sim"
)

// harness opens simulated devices shaped as the suite asks.
func harness() nictest.Harness {
	return nictest.Harness{
		Open: func(t *testing.T, c nictest.Config) nic.Device {
			t.Helper()
			d, err := simnic.New(t.Context(), optionsFor(c))
			if err != nil {
				t.Fatalf("new simulated device: %v", err)
			}
			return d
		},
		BAR: func(d nic.Device) *nic.Region { return d.(*simnic.Device).Region() },
	}
}

// optionsFor turns a suite configuration into simulator options.
func optionsFor(c nictest.Config) simnic.Options {
	p := sim.DefaultPipeline()
	if c.TableCapacity > 0 {
		p.TableEntries = c.TableCapacity
	}
	if c.RequestQueueDepth > 0 {
		p.RequestQueueDepth = c.RequestQueueDepth
	}
	if c.CompletionQueueDepth > 0 {
		p.CompletionQueueDepth = c.CompletionQueueDepth
	}
	return simnic.Options{Pipeline: p}
}

func TestConformance(t *testing.T) { nictest.Run(t, harness()) }
