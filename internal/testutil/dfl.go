package testutil

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FakeDFLOptions configure NewFakeDFL.
type FakeDFLOptions struct {
	// InterfaceID is the PR region's compat_id, 32 hex digits; zero means
	// "d8424dc4a4a3c413f89e433683f9040b".
	InterfaceID string
	// Ports is ports_num; zero means 1.
	Ports int
}

// FakeDFL is a fake Intel DFL card under a temporary root: the sysfs of an
// FME (ports_num, compat_id of its PR region, its FPGA manager's status), the
// ports (id, afu_id), and /dev/dfl-fme.0 as a regular file. A regular file
// cannot take ioctls, so Ioctl stands in for the kernel's
// DFL_FPGA_FME_PORT_PR handler: pass it as bitstream.DFLOptions.Ioctl.
type FakeDFL struct {
	Root        string // the tree's root
	FME         string // "dfl-fme.0"
	InterfaceID string

	node   string // Root/dev/dfl-fme.0
	fmeDir string
	ports  int

	mu         sync.Mutex
	accept     map[[32]byte]string // payload SHA-256 → afu_id the port reports after PR
	failErrno  syscall.Errno
	failStatus string
	prs        int
	lastArg    []byte
}

// NewFakeDFL builds the tree under t.TempDir().
func NewFakeDFL(t testing.TB, opts FakeDFLOptions) *FakeDFL {
	t.Helper()
	if opts.InterfaceID == "" {
		opts.InterfaceID = "d8424dc4a4a3c413f89e433683f9040b"
	}
	if opts.Ports <= 0 {
		opts.Ports = 1
	}
	root := t.TempDir()
	region := filepath.Join(root, "sys/class/fpga_region/region0")
	f := &FakeDFL{Root: root, FME: "dfl-fme.0", InterfaceID: opts.InterfaceID, ports: opts.Ports,
		node: filepath.Join(root, "dev/dfl-fme.0"), fmeDir: filepath.Join(region, "dfl-fme.0"), accept: map[[32]byte]string{}}
	files := map[string]string{
		"dfl-fme.0/dev":          "247:0\n",
		"dfl-fme.0/ports_num":    fmt.Sprintf("%d\n", opts.Ports),
		"dfl-fme.0/socket_id":    "0\n",
		"dfl-fme.0/bitstream_id": "0x23000410010309\n",
		"dfl-fme.0/dfl-fme-region.0/fpga_region/region1/compat_id": opts.InterfaceID + "\n",
		"dfl-fme.0/dfl-fme-mgr.0/fpga_manager/fpga0/name":          "DFL FME FPGA Manager\n",
		"dfl-fme.0/dfl-fme-mgr.0/fpga_manager/fpga0/state":         "operating\n",
		"dfl-fme.0/dfl-fme-mgr.0/fpga_manager/fpga0/status":        "",
	}
	for p := range opts.Ports {
		dir := fmt.Sprintf("dfl-port.%d", p)
		files[dir+"/id"] = fmt.Sprintf("%d\n", p)
		files[dir+"/dev"] = fmt.Sprintf("247:%d\n", p+1)
		files[dir+"/afu_id"] = strings.Repeat("0", 32) + "\n"
	}
	for name, content := range files {
		path := filepath.Join(region, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("fake dfl: %v", err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatalf("fake dfl: %v", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(f.node), 0o755); err != nil {
		t.Fatalf("fake dfl: %v", err)
	}
	if err := os.WriteFile(f.node, nil, 0o600); err != nil {
		t.Fatalf("fake dfl: %v", err)
	}
	return f
}

// Accept declares that the fake card can be reconfigured with payload, and
// that its port reports afuID afterwards. Payloads never declared fail PR
// with EIO and the status "reconfig incompatible image".
func (f *FakeDFL) Accept(payload []byte, afuID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accept[sha256.Sum256(payload)] = afuID
}

// FailNextPR makes the next PR ioctl fail with errno, the FME manager
// reporting status.
func (f *FakeDFL) FailNextPR(errno syscall.Errno, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failErrno, f.failStatus = errno, status
}

// PRCount counts PR ioctls that reached the fake kernel.
func (f *FakeDFL) PRCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prs
}

// LastArg returns the bytes of the last PR ioctl's argument.
func (f *FakeDFL) LastArg() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.lastArg...)
}

// AFUID returns the afu_id port reports.
func (f *FakeDFL) AFUID(port int) (string, error) {
	b, err := os.ReadFile(filepath.Join(f.Root, fmt.Sprintf("sys/class/fpga_region/region0/dfl-port.%d/afu_id", port)))
	return strings.TrimSpace(string(b)), err
}

// Ioctl is the fake kernel's ioctl entry: it accepts only
// DFL_FPGA_FME_PORT_PR (0xB680) on the fake FME node, checks the argument
// as dfl-fme-pr.c does (argsz, flags, port), reads the bitstream from this
// process's memory at buffer_address as copy_from_user would, and
// "programs" the port.
func (f *FakeDFL) Ioctl(fd uintptr, req uint, arg []byte) error {
	var st, node unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return err
	}
	if err := unix.Stat(f.node, &node); err != nil {
		return err
	}
	if st.Dev != node.Dev || st.Ino != node.Ino || req != 0xB680 {
		return syscall.ENOTTY
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prs++
	f.lastArg = append([]byte(nil), arg...)
	if len(arg) < 24 {
		return syscall.EFAULT
	}
	ne := binary.NativeEndian
	argsz, flags, port, size, addr := ne.Uint32(arg[0:]), ne.Uint32(arg[4:]), ne.Uint32(arg[8:]), ne.Uint32(arg[12:]), ne.Uint64(arg[16:])
	if argsz < 24 || flags != 0 || int(port) >= f.ports {
		return syscall.EINVAL
	}
	buf, err := readOwnMemory(addr, int(size))
	if err != nil {
		return syscall.EFAULT
	}
	afuFile := filepath.Join(f.Root, fmt.Sprintf("sys/class/fpga_region/region0/dfl-port.%d/afu_id", port))
	statusFile := filepath.Join(f.fmeDir, "dfl-fme-mgr.0/fpga_manager/fpga0/status")
	fail := func(errno syscall.Errno, status string) error {
		// A failed PR leaves the port without a working AFU.
		err := errors.Join(
			os.WriteFile(afuFile, []byte(strings.Repeat("0", 32)+"\n"), 0o644),
			os.WriteFile(statusFile, []byte(status+"\n"), 0o644))
		if err != nil {
			return syscall.EIO
		}
		return errno
	}
	if f.failErrno != 0 {
		errno, status := f.failErrno, f.failStatus
		f.failErrno, f.failStatus = 0, ""
		return fail(errno, status)
	}
	afu, ok := f.accept[sha256.Sum256(buf)]
	if !ok {
		return fail(syscall.EIO, "reconfig incompatible image")
	}
	if err := errors.Join(os.WriteFile(afuFile, []byte(afu+"\n"), 0o644), os.WriteFile(statusFile, nil, 0o644)); err != nil {
		return syscall.EIO
	}
	return nil
}

// readOwnMemory reads n bytes at addr of this process, through
// /proc/self/mem, the way the kernel's copy_from_user reads the caller's
// buffer.
func readOwnMemory(addr uint64, n int) ([]byte, error) {
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	buf := make([]byte, n)
	if _, err := mem.ReadAt(buf, int64(addr)); err != nil {
		return nil, err
	}
	return buf, nil
}
