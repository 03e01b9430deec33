//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// withNetns runs fn on a locked thread that has entered the network
// namespace at path, then returns the thread to its own namespace. Links
// and sockets fn creates stay bound to the namespace.
func withNetns(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the runtime retires the thread with its goroutine
		// rather than let another goroutine run in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
	}
	runtime.UnlockOSThread()
	return ferr
}
