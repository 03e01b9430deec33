package testutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// AddBARFile creates the resourceN file of a function added with Add (rel
// is what Add returned): a sparse regular file of size bytes, which mmaps
// at offset 0 with MAP_SHARED the way the kernel's resourceN of a memory
// BAR does. It returns the file's path. A simulator can map the same file
// and serve it as the card's register model (docs/regmap.md).
func (s *FakeSysfs) AddBARFile(rel string, bar int, size int64) string {
	s.t.Helper()
	path := filepath.Join(s.Root, rel, fmt.Sprintf("resource%d", bar))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		s.t.Fatalf("fake sysfs: %v", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		s.t.Fatalf("fake sysfs: %v", err)
	}
	if err := f.Close(); err != nil {
		s.t.Fatalf("fake sysfs: %v", err)
	}
	return path
}
