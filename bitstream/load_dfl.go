package bitstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// DFL partial reconfiguration (include/uapi/linux/fpga-dfl.h).
const (
	// DFLFMEPortPR is DFL_FPGA_FME_PORT_PR = _IO(DFL_FPGA_MAGIC 0xB6,
	// DFL_FME_BASE 0x80 + 0). The header defines it with _IO although it
	// passes a struct, so the number carries no size or direction bits.
	DFLFMEPortPR = 0xB680
	// DFLPortPRSize is sizeof(struct dfl_fpga_fme_port_pr): four __u32 and
	// one __u64, no padding.
	DFLPortPRSize = 24
)

// EncodeDFLPortPR returns struct dfl_fpga_fme_port_pr as the kernel reads
// it: argsz @0, flags @4 (0), port_id @8, buffer_size @12, buffer_address
// @16, in the host's byte order.
func EncodeDFLPortPR(port, bufferSize uint32, bufferAddress uint64) []byte {
	b := make([]byte, DFLPortPRSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], DFLPortPRSize)
	ne.PutUint32(b[4:], 0)
	ne.PutUint32(b[8:], port)
	ne.PutUint32(b[12:], bufferSize)
	ne.PutUint64(b[16:], bufferAddress)
	return b
}

// IoctlFunc issues ioctl(fd, req, arg) where arg points at the first byte
// of the argument buffer. It returns the errno as a syscall.Errno.
type IoctlFunc func(fd uintptr, req uint, arg []byte) error

// DFLOptions configure a DFLLoader.
type DFLOptions struct {
	// Root is the filesystem root the sysfs and /dev paths are under; zero
	// means "/". Tests pass a fake tree.
	Root string
	// FME is the FME device ("dfl-fme.0"); zero means the only one under
	// sys/class/fpga_region/region*/.
	FME string
	// Port is the port (AFU slot) to reconfigure.
	Port uint32
	// Part is the card's FPGA part, if known.
	Part string
	// Ioctl issues the PR ioctl; zero means ioctl(2). A regular file in a
	// fake tree cannot take ioctls, so tests pass the fake FME's handler.
	Ioctl IoctlFunc
	// Logger receives load events; nil discards them.
	Logger *slog.Logger
}

// DFLLoader partially reconfigures an Intel FPGA card (PAC, N3000, N6000)
// through the kernel's DFL FME device: DFL_FPGA_FME_PORT_PR on
// /dev/dfl-fme.N with the image's raw PR bitstream. Before it touches the
// card it checks the image's interface UUID against the FME region's
// compat_id; after PR it reads the port's afu_id as the ready signal.
type DFLLoader struct {
	opts DFLOptions
	log  *slog.Logger
}

var _ Loader = (*DFLLoader)(nil)

// NewDFLLoader returns a loader for DFL cards.
func NewDFLLoader(opts DFLOptions) (*DFLLoader, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Ioctl == nil {
		opts.Ioctl = sysIoctl
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DFLLoader{opts: opts, log: log}, nil
}

// Name returns "fpga-dfl".
func (l *DFLLoader) Name() string { return "fpga-dfl" }

// dflDevice is what discovery found.
type dflDevice struct {
	fmeDir    string // sysfs directory of the FME
	fmeName   string // dfl-fme.N
	node      string // /dev/dfl-fme.N
	compatID  string // interface UUID of the PR region, canonical
	portsNum  int
	portDir   string // sysfs directory of the port
	fmeStatus string // glob of the FME manager's status attribute
}

func (l *DFLLoader) discover() (*dflDevice, error) {
	root := l.opts.Root
	fmes, err := filepath.Glob(filepath.Join(root, "sys/class/fpga_region/region*/dfl-fme.*"))
	if err != nil {
		return nil, fmt.Errorf("find dfl fme: %w", err)
	}
	if l.opts.FME != "" {
		fmes = slices.DeleteFunc(fmes, func(p string) bool { return filepath.Base(p) != l.opts.FME })
	}
	switch len(fmes) {
	case 0:
		what := "no DFL FME"
		if l.opts.FME != "" {
			what = "no DFL FME " + l.opts.FME
		}
		return nil, fmt.Errorf("%s under %s: %w", what, filepath.Join(root, "sys/class/fpga_region"), ErrNoDevice)
	case 1:
	default:
		return nil, fmt.Errorf("%d DFL FMEs found: set DFLOptions.FME", len(fmes))
	}
	d := &dflDevice{fmeDir: fmes[0], fmeName: filepath.Base(fmes[0])}
	d.node = filepath.Join(root, "dev", d.fmeName)
	if _, err := os.Stat(d.node); err != nil {
		return nil, fmt.Errorf("dfl fme device node: %w (%w)", ErrNoDevice, err)
	}
	ids, err := filepath.Glob(filepath.Join(d.fmeDir, "dfl-fme-region.*/fpga_region/region*/compat_id"))
	if err != nil || len(ids) == 0 {
		return nil, fmt.Errorf("dfl fme %s has no PR region compat_id: cannot check the image's interface: %w", d.fmeName, ErrNotSupported)
	}
	raw, err := readAttr(ids[0])
	if err != nil {
		return nil, err
	}
	if d.compatID, err = NormalizeUUID(raw); err != nil {
		return nil, fmt.Errorf("dfl fme %s compat_id: %w", d.fmeName, err)
	}
	pn, err := readAttr(filepath.Join(d.fmeDir, "ports_num"))
	if err != nil {
		return nil, err
	}
	if d.portsNum, err = strconv.Atoi(strings.TrimSpace(pn)); err != nil {
		return nil, fmt.Errorf("dfl fme %s ports_num %q: %w", d.fmeName, pn, err)
	}
	ports, _ := filepath.Glob(filepath.Join(root, "sys/class/fpga_region/region*/dfl-port.*"))
	for _, p := range ports {
		if id, err := readAttr(filepath.Join(p, "id")); err == nil && strings.TrimSpace(id) == strconv.FormatUint(uint64(l.opts.Port), 10) {
			d.portDir = p
			break
		}
	}
	d.fmeStatus = filepath.Join(d.fmeDir, "dfl-fme-mgr.*/fpga_manager/fpga*/status")
	return d, nil
}

// payload returns the raw PR bitstream and checks it against the device.
func (l *DFLLoader) payload(img *Image, d *dflDevice) ([]byte, error) {
	m := img.manifest
	var errs []error
	if err := checkIdentity(m, identity{Kind: KindFPGA, Part: l.opts.Part, InterfaceID: d.compatID}); err != nil {
		errs = append(errs, err)
	}
	if m.Target.InterfaceID == "" {
		errs = append(errs, &IncompatibleError{Field: "target.interface_id", Image: "", Target: d.compatID, Reason: "a DFL image must name the interface it was built against"})
	}
	if int64(l.opts.Port) >= int64(d.portsNum) {
		errs = append(errs, &IncompatibleError{Field: "port", Image: strconv.FormatUint(uint64(l.opts.Port), 10), Target: fmt.Sprintf("%d ports", d.portsNum)})
	}
	sec, ok := img.Section(PayloadRaw)
	if !ok {
		errs = append(errs, &IncompatibleError{Field: "payload", Image: "no raw section", Target: "a raw PR bitstream"})
	} else if uint64(len(sec.Data)) > 0xffffffff {
		errs = append(errs, &IncompatibleError{Field: "payload", Image: fmt.Sprintf("%d bytes", len(sec.Data)), Target: "< 4 GiB (buffer_size is __u32)"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sec.Data, nil
}

// Check verifies kind, part, interface UUID against compat_id, the port
// number and the payload.
func (l *DFLLoader) Check(_ context.Context, img *Image) error {
	d, err := l.discover()
	if err == nil {
		_, err = l.payload(img, d)
	}
	if err != nil {
		return fmt.Errorf("check image %s for fpga-dfl: %w", img, err)
	}
	return nil
}

// Load reconfigures the port with the image and checks the port's afu_id
// once the ioctl returns.
func (l *DFLLoader) Load(_ context.Context, img *Image) error {
	d, err := l.discover()
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	data, err := l.payload(img, d)
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	f, err := os.OpenFile(d.node, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("load image %s: open %s: %w: %w", img, d.node, err, ErrTargetUnchanged)
	}
	defer f.Close()
	if err := l.portPR(f, data); err != nil {
		msg := fmt.Sprintf("DFL_FPGA_FME_PORT_PR on %s port %d", d.fmeName, l.opts.Port)
		if errors.Is(err, syscall.EIO) {
			// The kernel's advice: on EIO, the FME manager's status says what the hardware saw.
			if st := readStatusGlob(d.fmeStatus); st != "" {
				msg += " (fme manager status: " + st + ")"
			}
		}
		return fmt.Errorf("load image %s: %s: %w: %w", img, msg, err, ErrLoadFailed)
	}
	if d.portDir == "" {
		return fmt.Errorf("load image %s: no sysfs directory for port %d to read afu_id from: %w", img, l.opts.Port, ErrLoadFailed)
	}
	raw, err := readAttr(filepath.Join(d.portDir, "afu_id"))
	if err != nil {
		return fmt.Errorf("load image %s: port ready check: %w: %w", img, err, ErrLoadFailed)
	}
	afu, err := NormalizeUUID(raw)
	if err != nil {
		return fmt.Errorf("load image %s: port afu_id: %w: %w", img, err, ErrLoadFailed)
	}
	if want := img.manifest.Target.AcceleratorID; want != "" && afu != want {
		return fmt.Errorf("load image %s: port %d reports afu_id %s after PR, the image promises %s: %w", img, l.opts.Port, afu, want, ErrLoadFailed)
	}
	l.log.Info("dfl_pr_done", "fme", d.fmeName, "port", l.opts.Port, "afu_id", afu)
	return nil
}

// portPR issues the PR ioctl. The payload and the argument are pinned for
// the call: the kernel reads the payload through the address inside the
// argument, which the garbage collector cannot see.
func (l *DFLLoader) portPR(f *os.File, data []byte) error {
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&data[0])
	arg := EncodeDFLPortPR(l.opts.Port, uint32(len(data)), uint64(uintptr(unsafe.Pointer(&data[0]))))
	pin.Pin(&arg[0])
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("ioctl: %w", err)
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = l.opts.Ioctl(fd, DFLFMEPortPR, arg) }); err != nil {
		return fmt.Errorf("ioctl: %w", err)
	}
	runtime.KeepAlive(data)
	return ioErr
}

func readStatusGlob(glob string) string {
	paths, _ := filepath.Glob(glob)
	for _, p := range paths {
		if s, err := readAttr(p); err == nil && s != "" {
			return strings.ReplaceAll(s, "\n", "; ")
		}
	}
	return ""
}
