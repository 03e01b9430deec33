package fpga

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kvloom/kvloom/nic"
)

// DefaultSysfsRoot is where sysfs is mounted on a host.
const DefaultSysfsRoot = "/sys"

// function is one PCI function as sysfs describes it.
type function struct {
	bdf            string
	dir            string
	vendor, device uint16
	class          uint32
	bars           map[int]uint64 // BAR index → size from the resource file
}

// functionDir is the sysfs directory of a PCI function.
func functionDir(root, bdf string) string {
	return filepath.Join(root, "bus", "pci", "devices", bdf)
}

// listFunctions returns the BDFs under root's bus/pci/devices, sorted.
func listFunctions(root string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(root, "bus", "pci", "devices", "*"))
	if err != nil {
		return nil, fmt.Errorf("list PCI functions: %w", err)
	}
	bdfs := make([]string, 0, len(dirs))
	for _, d := range dirs {
		bdfs = append(bdfs, filepath.Base(d))
	}
	return bdfs, nil
}

// mapBAR checks and maps BAR index of f: the resource file's size must
// agree with the resource table and hold the register map.
func mapBAR(f *function, index int, writable bool) (*nic.Region, error) {
	path := filepath.Join(f.dir, fmt.Sprintf("resource%d", index))
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("BAR%d of %s: no %s: the BAR is not implemented or not memory-mapped: %w", index, f.bdf, filepath.Base(path), ErrBARTooSmall)
	}
	if err != nil {
		return nil, fmt.Errorf("BAR%d of %s: %w", index, f.bdf, err)
	}
	size := uint64(st.Size())
	if want, ok := f.bars[index]; ok && want != size {
		return nil, fmt.Errorf("BAR%d of %s: %s is %d bytes but the resource table says %d", index, f.bdf, filepath.Base(path), size, want)
	}
	if size < nic.MinBARSize {
		return nil, fmt.Errorf("BAR%d of %s is %d bytes, the register map needs %d: %w", index, f.bdf, size, nic.MinBARSize, ErrBARTooSmall)
	}
	bar, err := nic.MapFile(path, writable)
	switch {
	case errors.Is(err, syscall.EINVAL):
		return nil, fmt.Errorf("BAR%d of %s: the kernel refused the mapping (a driver claimed the region exclusively, or the kernel is locked down; unbind it or use the vendor runtime): %w: %w", index, f.bdf, ErrBARBusy, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("BAR%d of %s: resource files are root-only (0600): %w: %w", index, f.bdf, ErrBARBusy, err)
	case err != nil:
		return nil, fmt.Errorf("BAR%d of %s: %w", index, f.bdf, err)
	}
	return bar, nil
}

// imageLabel names the image a card reports in its ID registers.
func imageLabel(g nic.Geometry) string {
	if g.ImageID == [16]byte{} {
		return ""
	}
	v := g.ImageVersion
	return fmt.Sprintf("kvloom image %s v%d.%d.%d", hex.EncodeToString(g.ImageID[:8]), v>>16&0xff, v>>8&0xff, v&0xff)
}
