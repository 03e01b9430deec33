//go:build !linux

package fpga

import (
	"fmt"

	"github.com/kvloom/kvloom/nic"
)

// readFunction needs Linux sysfs.
func readFunction(root, bdf string) (*function, error) {
	return nil, fmt.Errorf("read PCI function %s: %w", bdf, nic.ErrNotSupported)
}
