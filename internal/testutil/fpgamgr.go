package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FakeFPGAManagerOptions configure NewFakeFPGAManager.
type FakeFPGAManagerOptions struct {
	// Name is the manager's driver name; zero means
	// "Xilinx ZynqMP FPGA Manager".
	Name string
	// Upstream builds the tree an upstream kernel exposes: name, state and
	// status only, no firmware or flags attribute.
	Upstream bool
	// Zynq7000 checks full images the way zynq-fpga does: the sync word must
	// appear byte-swapped (66 55 99 aa) at a 4-byte-aligned offset. Without
	// it, images must carry aa 99 55 66 (ZynqMP .bit.bin).
	Zynq7000 bool
	// StepDelay is the time the fake kernel spends in each state; zero
	// means 2ms.
	StepDelay time.Duration
}

// FakeFPGAManager is a fake /sys/class/fpga_manager/fpga0 of a linux-xlnx
// kernel under a temporary root, with a fake kernel goroutine that does what
// the firmware store handler does: walk state through "firmware request",
// "write init", "write", "write complete" to "operating", or stop in the
// matching error state (hardware reference §1.2, §1.9). Pass Root to
// bitstream.FPGAMgrOptions.Root and WriteAttr to its WriteAttr.
type FakeFPGAManager struct {
	Root        string // the tree's root
	Dir         string // Root/sys/class/fpga_manager/fpga0
	FirmwareDir string // Root/lib/firmware

	opts FakeFPGAManagerOptions
	reqs chan fwRequest
	quit chan struct{}
	done chan struct{}

	mu       sync.Mutex
	failures []injectedFailure // queued for the next loads
	loaded   string            // firmware operating now
	data     []byte            // its bytes
	walks    []string          // every state written, in order
	loads    int
	faults   []error // failures of the fake itself
}

type injectedFailure struct{ state, status string }

type fwRequest struct {
	name  string
	reply chan error
}

// NewFakeFPGAManager builds the tree under t.TempDir() and starts the fake
// kernel; t's cleanup stops it and waits for it.
func NewFakeFPGAManager(t testing.TB, opts FakeFPGAManagerOptions) *FakeFPGAManager {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "Xilinx ZynqMP FPGA Manager"
	}
	if opts.StepDelay <= 0 {
		opts.StepDelay = 2 * time.Millisecond
	}
	root := t.TempDir()
	f := &FakeFPGAManager{
		Root:        root,
		Dir:         filepath.Join(root, "sys/class/fpga_manager/fpga0"),
		FirmwareDir: filepath.Join(root, "lib/firmware"),
		opts:        opts,
		reqs:        make(chan fwRequest),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	files := map[string]string{"name": opts.Name + "\n", "state": "operating\n", "status": ""}
	if !opts.Upstream {
		files["flags"] = "0\n"
		files["firmware"] = ""
	}
	for _, d := range []string{f.Dir, f.FirmwareDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("fake fpga manager: %v", err)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(f.Dir, name), []byte(content), 0o644); err != nil {
			t.Fatalf("fake fpga manager: %v", err)
		}
	}
	go f.kernel()
	t.Cleanup(func() {
		close(f.quit)
		<-f.done
		if err := errors.Join(f.faults...); err != nil {
			t.Errorf("fake fpga manager broke: %v", err)
		}
	})
	return f
}

// FailNextLoad makes a coming firmware load stop in state (one of
// "firmware request error", "write init error", "write error",
// "write complete error"), with status lines status, and fail the write
// with EIO, as a failing driver op does. Calls queue: two calls fail the
// next two loads.
func (f *FakeFPGAManager) FailNextLoad(state, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, injectedFailure{state, status})
}

// Operating returns the name and bytes of the firmware the fake FPGA runs,
// or "" when the last load failed (the fabric holds no known image).
func (f *FakeFPGAManager) Operating() (string, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loaded, f.data
}

// Walked returns every state the fake kernel has written, in order.
func (f *FakeFPGAManager) Walked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.walks...)
}

// Loads counts firmware writes the fake kernel handled.
func (f *FakeFPGAManager) Loads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loads
}

// WriteAttr is the sysfs write seam: writes to firmware run the fake
// kernel's load synchronously, as the linux-xlnx store handler does;
// writes to flags are parsed like kstrtol(buf, 16); read-only attributes
// refuse writes.
func (f *FakeFPGAManager) WriteAttr(path string, value []byte) error {
	attr := filepath.Base(path)
	if filepath.Dir(path) != f.Dir {
		return &os.PathError{Op: "write", Path: path, Err: syscall.ENOENT}
	}
	switch attr {
	case "firmware":
		if f.opts.Upstream {
			return &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
		}
		name := strings.TrimSuffix(string(value), "\n")
		req := fwRequest{name: name, reply: make(chan error, 1)}
		select {
		case f.reqs <- req:
		case <-f.quit:
			return &os.PathError{Op: "write", Path: path, Err: syscall.ENODEV}
		}
		if err := <-req.reply; err != nil {
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		return nil
	case "flags":
		if f.opts.Upstream {
			return &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
		}
		s := strings.TrimSuffix(string(value), "\n")
		v, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), 16, 64)
		if err != nil {
			return &os.PathError{Op: "write", Path: path, Err: syscall.EINVAL}
		}
		return os.WriteFile(path, fmt.Appendf(nil, "%x\n", v), 0o644)
	case "name", "state", "status":
		return &os.PathError{Op: "open", Path: path, Err: syscall.EACCES}
	}
	return &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
}

// kernel serves firmware writes until quit.
func (f *FakeFPGAManager) kernel() {
	defer close(f.done)
	for {
		select {
		case <-f.quit:
			return
		case req := <-f.reqs:
			req.reply <- f.load(req.name)
		}
	}
}

// setState replaces the state file atomically, so readers never see it
// half-written.
func (f *FakeFPGAManager) setState(s string) {
	f.mu.Lock()
	f.walks = append(f.walks, s)
	f.mu.Unlock()
	f.fault(atomicWrite(f.Root, filepath.Join(f.Dir, "state"), []byte(s+"\n")))
}

func (f *FakeFPGAManager) setStatus(s string) {
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	f.fault(atomicWrite(f.Root, filepath.Join(f.Dir, "status"), []byte(s)))
}

func atomicWrite(tmpDir, path string, data []byte) error {
	tmp, err := os.CreateTemp(tmpDir, ".attr-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	return errors.Join(err, tmp.Close(), os.Rename(tmp.Name(), path))
}

// fault records a failure of the fake itself (its temporary tree broke);
// the test's cleanup reports it.
func (f *FakeFPGAManager) fault(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, err)
}

// load walks the states of fpga_mgr_firmware_load.
func (f *FakeFPGAManager) load(name string) error {
	f.mu.Lock()
	var failAt, failStat string
	if len(f.failures) > 0 {
		failAt, failStat = f.failures[0].state, f.failures[0].status
		f.failures = f.failures[1:]
	}
	f.loads++
	f.loaded, f.data = "", nil
	f.mu.Unlock()
	f.setStatus("")
	step := func(state string) bool {
		f.setState(state)
		time.Sleep(f.opts.StepDelay)
		if failAt == state+" error" {
			f.setState(failAt)
			f.setStatus(failStat)
			return false
		}
		return true
	}
	if !step("firmware request") {
		return syscall.EIO
	}
	data, err := os.ReadFile(filepath.Join(f.FirmwareDir, name))
	if err != nil || strings.Contains(name, "/") {
		f.setState("firmware request error")
		f.setStatus("firmware request error")
		return syscall.ENOENT
	}
	if !step("write init") {
		return syscall.EIO
	}
	flags, _ := os.ReadFile(filepath.Join(f.Dir, "flags"))
	partial := strings.TrimSpace(string(flags)) == "1"
	if !f.validImage(data, partial) {
		f.setState("write init error")
		return syscall.EINVAL
	}
	if !step("write") || !step("write complete") {
		return syscall.EIO
	}
	f.setState("operating")
	f.mu.Lock()
	f.loaded, f.data = name, data
	f.mu.Unlock()
	return nil
}

// validImage applies the sync-word check of the driver the fake stands for.
func (f *FakeFPGAManager) validImage(data []byte, partial bool) bool {
	want := []byte{0xaa, 0x99, 0x55, 0x66}
	if f.opts.Zynq7000 {
		if partial {
			return true // zynq-fpga skips the check for partial images
		}
		want = []byte{0x66, 0x55, 0x99, 0xaa}
	}
	for i := 0; i+4 <= len(data) && i < 4096; i += 4 {
		if bytes.Equal(data[i:i+4], want) {
			return true
		}
	}
	return false
}
