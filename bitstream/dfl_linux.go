package bitstream

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysIoctl is ioctl(2). arg must stay pinned for the call (DFLLoader pins
// it).
func sysIoctl(fd uintptr, req uint, arg []byte) error {
	if len(arg) == 0 {
		return unix.EINVAL
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(&arg[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
