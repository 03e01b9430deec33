package simnic_test

import (
	"testing"

	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/sim"
)

// The cluster simulator's default pipeline prices PCIe transfers with the
// register map's descriptor and completion sizes: one source of truth.
func TestDefaultPipelineMatchesRegisterMap(t *testing.T) {
	p := sim.DefaultPipeline()
	if p.DescriptorBytes != nic.ReqDescSize || p.CompletionBytes != nic.CplEntrySize {
		t.Errorf("sim.DefaultPipeline: descriptor %d, completion %d bytes; register map: REQ_DESC %d, CPL_ENTRY %d",
			p.DescriptorBytes, p.CompletionBytes, nic.ReqDescSize, nic.CplEntrySize)
	}
}
