package bitstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fpga_manager state strings (include/linux/fpga/fpga-mgr.h, state_str[]).
const (
	fpgaStateOperating = "operating"
)

// FPGAMgrOptions configure an FPGAMgrLoader.
type FPGAMgrOptions struct {
	// Root is the filesystem root the sysfs and firmware paths are under;
	// zero means "/". Tests pass a fake tree.
	Root string
	// Manager is the fpga_manager device ("fpga0"); zero means the only one
	// under sys/class/fpga_manager.
	Manager string
	// FirmwareDir is the kernel firmware loader's directory, relative to
	// Root; zero means "lib/firmware".
	FirmwareDir string
	// ByteSwap swaps every 32-bit word of the configuration data: the
	// Zynq-7000 driver wants a byte-swapped .bin. ZynqMP and Versal do not.
	ByteSwap bool
	// Part is the board's FPGA part, if known: fpga_manager does not report
	// it.
	Part string
	// WriteAttr writes a sysfs attribute. Zero means os.WriteFile. A sysfs
	// store runs the kernel's handler inside the write, which a file in a
	// fake tree cannot do, so tests pass the fake kernel's writer here.
	WriteAttr func(path string, value []byte) error
	// PollInterval is how often state is read while following it; zero
	// means 10ms.
	PollInterval time.Duration
	// Timeout bounds waiting for "operating"; zero means one minute.
	Timeout time.Duration
	// Logger receives state transitions; nil discards them.
	Logger *slog.Logger
}

// FPGAMgrLoader programs an FPGA through the Linux FPGA manager's sysfs
// interface as the Xilinx (linux-xlnx) kernel exposes it on Zynq, ZynqMP
// and Versal boards: copy the configuration data into the firmware
// directory, write flags (0 full, 1 partial), write the file's name to
// firmware, and follow state until "operating" or an error state. Upstream
// kernels expose only name, state and status there; Check says so.
type FPGAMgrLoader struct {
	opts FPGAMgrOptions
	log  *slog.Logger
}

var _ Loader = (*FPGAMgrLoader)(nil)

// NewFPGAMgrLoader returns a loader for the FPGA manager.
func NewFPGAMgrLoader(opts FPGAMgrOptions) (*FPGAMgrLoader, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.FirmwareDir == "" {
		opts.FirmwareDir = "lib/firmware"
	}
	if filepath.IsAbs(opts.FirmwareDir) {
		return nil, fmt.Errorf("new fpga-mgr loader: FirmwareDir %q must be relative to Root", opts.FirmwareDir)
	}
	if opts.WriteAttr == nil {
		opts.WriteAttr = func(path string, value []byte) error { return os.WriteFile(path, value, 0) }
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Millisecond
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FPGAMgrLoader{opts: opts, log: log}, nil
}

// Name returns "fpga-mgr".
func (l *FPGAMgrLoader) Name() string { return "fpga-mgr" }

// managerDir finds the fpga_manager's sysfs directory.
func (l *FPGAMgrLoader) managerDir() (string, error) {
	class := filepath.Join(l.opts.Root, "sys/class/fpga_manager")
	if l.opts.Manager != "" {
		dir := filepath.Join(class, l.opts.Manager)
		if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
			return "", fmt.Errorf("fpga manager %s: %w (%w)", l.opts.Manager, ErrNoDevice, err)
		}
		return dir, nil
	}
	ents, err := os.ReadDir(class)
	if err != nil {
		return "", fmt.Errorf("list fpga managers: %w (%w)", ErrNoDevice, err)
	}
	switch len(ents) {
	case 0:
		return "", fmt.Errorf("no fpga manager under %s: %w", class, ErrNoDevice)
	case 1:
		return filepath.Join(class, ents[0].Name()), nil
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return "", fmt.Errorf("%d fpga managers under %s (%s): set FPGAMgrOptions.Manager", len(ents), class, strings.Join(names, ", "))
}

// device checks the manager exposes the linux-xlnx attributes and returns
// its directory and driver name.
func (l *FPGAMgrLoader) device() (dir, name string, err error) {
	dir, err = l.managerDir()
	if err != nil {
		return "", "", err
	}
	var missing []string
	for _, a := range []string{"firmware", "flags"} {
		if _, err := os.Lstat(filepath.Join(dir, a)); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, a)
		} else if err != nil {
			return "", "", fmt.Errorf("fpga manager %s: %w", dir, err)
		}
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("fpga manager %s has no %s attribute: this kernel's fpga_manager exposes only name, state and status, as upstream Linux does; "+
			"programming through sysfs needs the Xilinx linux-xlnx kernel (or use a device-tree overlay, DFL or XRT): %w",
			filepath.Base(dir), strings.Join(missing, " or "), ErrNotSupported)
	}
	name, err = readAttr(filepath.Join(dir, "name"))
	if err != nil {
		return "", "", err
	}
	return dir, name, nil
}

// configData returns the bytes the kernel's firmware loader should get.
func (l *FPGAMgrLoader) configData(img *Image) ([]byte, error) {
	m := img.manifest
	var data []byte
	if sec, ok := img.Section(PayloadXilinxBit); ok {
		bf, err := ParseBit(sec.Data)
		if err != nil {
			return nil, err
		}
		if m.Target.Part != "" && !PartsMatch(m.Target.Part, bf.Part) {
			return nil, &IncompatibleError{Field: "target.part", Image: m.Target.Part, Target: bf.Part, Reason: "the manifest and the .bit header name different parts"}
		}
		data = bf.Data
	} else if sec, ok := img.Section(PayloadRaw); ok {
		data = sec.Data
	} else {
		return nil, &IncompatibleError{Field: "payload", Image: "no xilinx-bit or raw section", Target: "a .bit or raw bitstream", Reason: "xclbin images load through xrt"}
	}
	if l.opts.ByteSwap {
		if len(data)%4 != 0 {
			return nil, &IncompatibleError{Field: "payload", Image: fmt.Sprintf("%d bytes", len(data)), Target: "a multiple of 4 bytes", Reason: "Zynq-7000 byte swapping works on 32-bit words"}
		}
		sw := make([]byte, len(data))
		for i := 0; i < len(data); i += 4 {
			sw[i], sw[i+1], sw[i+2], sw[i+3] = data[i+3], data[i+2], data[i+1], data[i]
		}
		data = sw
	}
	return data, nil
}

// Check verifies the manager supports sysfs programming and that the image
// fits: kind, part, driver name, payload.
func (l *FPGAMgrLoader) Check(_ context.Context, img *Image) error {
	_, name, err := l.device()
	if err != nil {
		return fmt.Errorf("check image %s for fpga-mgr: %w", img, err)
	}
	err = checkIdentity(img.manifest, identity{Kind: KindFPGA, Part: l.opts.Part, Driver: name})
	if err == nil {
		_, err = l.configData(img)
	}
	if err != nil {
		return fmt.Errorf("check image %s for fpga-mgr: %w", img, err)
	}
	return nil
}

// Load programs img and follows state until "operating" or an error state.
func (l *FPGAMgrLoader) Load(ctx context.Context, img *Image) error {
	dir, _, err := l.device()
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	data, err := l.configData(img)
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	fwDir := filepath.Join(l.opts.Root, l.opts.FirmwareDir)
	fwName := "kvloom-" + img.manifest.Name + "-" + img.ID()[:16] + ".bin"
	if err := os.MkdirAll(fwDir, 0o755); err != nil {
		return fmt.Errorf("load image %s: create firmware directory: %w: %w", img, err, ErrTargetUnchanged)
	}
	if err := writeFileAtomic(filepath.Join(fwDir, fwName), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}); err != nil {
		return fmt.Errorf("load image %s: firmware file: %w: %w", img, err, ErrTargetUnchanged)
	}
	flags := "0"
	if img.manifest.Target.Partial {
		flags = "1"
	}
	if err := l.opts.WriteAttr(filepath.Join(dir, "flags"), []byte(flags)); err != nil {
		return fmt.Errorf("load image %s: set flags %s: %w: %w", img, flags, err, ErrTargetUnchanged)
	}
	if err := l.program(ctx, dir, fwName); err != nil {
		return fmt.Errorf("load image %s through %s: %w", img, filepath.Base(dir), err)
	}
	l.removeStale(fwDir, fwName)
	return nil
}

// program writes the firmware name and follows state. The linux-xlnx store
// handler programs the device inside the write; the state walk is watched
// meanwhile and checked once the write returns.
func (l *FPGAMgrLoader) program(ctx context.Context, dir, fwName string) error {
	stateFile := filepath.Join(dir, "state")
	done := make(chan error, 1)
	go func() { done <- l.opts.WriteAttr(filepath.Join(dir, "firmware"), []byte(fwName)) }()
	tick := time.NewTicker(l.opts.PollInterval)
	defer tick.Stop()
	deadline := time.NewTimer(l.opts.Timeout)
	defer deadline.Stop()
	var (
		writeErr  error
		writeDone bool
		last      string
		walked    []string
	)
	for {
		st, err := readAttr(stateFile)
		if err == nil && st != last {
			walked = append(walked, st)
			l.log.Debug("fpga_state", "manager", filepath.Base(dir), "state", st)
			last = st
		}
		if writeDone {
			switch {
			case err != nil:
				return fmt.Errorf("read state after programming: %w", err)
			case st == fpgaStateOperating && writeErr == nil:
				l.log.Info("fpga_programmed", "manager", filepath.Base(dir), "firmware", fwName, "states", strings.Join(walked, " → "))
				return nil
			case strings.HasSuffix(st, " error") || writeErr != nil:
				return l.failure(dir, st, walked, writeErr)
			}
		}
		select {
		case writeErr = <-done:
			writeDone = true
		case <-tick.C:
		case <-deadline.C:
			if !writeDone {
				writeErr = <-done
			}
			return fmt.Errorf("state %q after %s, not operating (walked %s; write: %v): %w", last, l.opts.Timeout, strings.Join(walked, " → "), writeErr, ErrLoadFailed)
		case <-ctx.Done():
			if !writeDone {
				<-done // a sysfs write cannot be interrupted; wait for the kernel
			}
			return fmt.Errorf("follow fpga state: %w", ctx.Err())
		}
	}
}

func (l *FPGAMgrLoader) failure(dir, state string, walked []string, writeErr error) error {
	status, _ := readAttr(filepath.Join(dir, "status"))
	msg := fmt.Sprintf("programming failed in state %q (walked %s)", state, strings.Join(walked, " → "))
	if status != "" {
		msg += "; status: " + strings.ReplaceAll(status, "\n", "; ")
	}
	if writeErr != nil {
		return fmt.Errorf("%s; firmware write: %w: %w", msg, writeErr, ErrLoadFailed)
	}
	return fmt.Errorf("%s: %w", msg, ErrLoadFailed)
}

// removeStale deletes firmware files of earlier kvloom loads.
func (l *FPGAMgrLoader) removeStale(fwDir, keep string) {
	ents, err := os.ReadDir(fwDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); n != keep && strings.HasPrefix(n, "kvloom-") && strings.HasSuffix(n, ".bin") {
			if err := os.Remove(filepath.Join(fwDir, n)); err != nil {
				l.log.Warn("firmware_cleanup_failed", "file", n, "err", err)
			}
		}
	}
}

// readAttr reads a sysfs attribute without its trailing newline.
func readAttr(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// writeFileAtomic writes path through a temporary file in its directory
// and a rename, so that no reader (the kernel's firmware loader, a daemon
// reading an image) ever sees a half-written file.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".kvloom-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(tmp))
	}
	return nil
}
