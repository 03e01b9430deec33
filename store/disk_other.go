//go:build !linux

package store

import "os"

// readAhead has no portable equivalent of posix_fadvise: reads rely on the
// operating system's own readahead.
func readAhead(*os.File, int64, int64) {}

// readCached cannot tell what the operating system caches: it reads
// nothing, and the caller reads normally.
func readCached(*os.File, []byte, int64) int { return 0 }

// dropCache is a no-op where posix_fadvise is not available.
func dropCache(*os.File) {}
