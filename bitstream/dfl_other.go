//go:build !linux

package bitstream

import "fmt"

// sysIoctl reports that DFL programming needs Linux.
func sysIoctl(uintptr, uint, []byte) error {
	return fmt.Errorf("dfl ioctl: %w", ErrNotSupported)
}
