//go:build !linux

package nic

import "fmt"

// MapFile maps sysfs BARs, which exist on Linux only.
func MapFile(path string, writable bool) (*Region, error) {
	return nil, fmt.Errorf("map %s: %w", path, ErrNotSupported)
}
