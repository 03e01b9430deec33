package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// readAhead asks the kernel to start reading a blob's bytes into the page
// cache now, so that on a cold read the later layers stream in while the
// caller consumes the first ones. Advice only: errors are ignored.
func readAhead(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}

// dropCache asks the kernel to drop a file's clean pages from the page
// cache (cold-read benchmarks). Advice only.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
