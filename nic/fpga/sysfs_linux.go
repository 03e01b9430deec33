package fpga

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/u-root/u-root/pkg/pci"

	"github.com/kvloom/kvloom/nic"
)

// readFunction reads a PCI function's identity and BAR table from sysfs
// with u-root's reader, which takes any directory.
func readFunction(root, bdf string) (*function, error) {
	dir := functionDir(root, bdf)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no PCI function %s under %s: card absent: %w", bdf, root, nic.ErrNoDevice)
	}
	p, err := pci.OnePCI(dir)
	if err != nil {
		return nil, fmt.Errorf("read PCI function %s: %w", bdf, err)
	}
	f := &function{bdf: bdf, dir: dir, vendor: p.Vendor, device: p.Device, class: p.Class, bars: map[int]uint64{}}
	for _, b := range p.BARS {
		if b.Lim >= b.Base {
			f.bars[b.Index] = b.Lim - b.Base + 1
		}
	}
	return f, nil
}
