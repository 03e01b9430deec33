package nic

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MapFile maps a whole file as a region with MAP_SHARED, the way a PCI BAR
// is mapped from sysfs resourceN: at offset 0, with the file's size as the
// length. Two mappings of the same file share memory, which is how the
// simulator serves a fake BAR. writable=false maps it read-only, for probes
// that must not disturb a device another process drives.
func MapFile(path string, writable bool) (*Region, error) {
	flag, prot := os.O_RDONLY, unix.PROT_READ
	if writable {
		flag, prot = os.O_RDWR, unix.PROT_READ|unix.PROT_WRITE
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	size := st.Size()
	if size <= 0 || size%8 != 0 || size > 1<<40 {
		return nil, fmt.Errorf("map %s: size %d is not a BAR size (a positive multiple of 8)", path, size)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s (%d bytes): %w", path, size, err)
	}
	return &Region{mem: mem, writable: writable, unmap: func() error {
		if err := unix.Munmap(mem); err != nil {
			return fmt.Errorf("unmap %s: %w", path, err)
		}
		return nil
	}}, nil
}
