package bitstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// XRT's tools, newest name first: xbutil was renamed xrt-smi, and the alias
// is gone after XRT 2024.2.
var xrtTools = []string{"xrt-smi", "xbutil"}

// xrtDefaultDir is where XRT's packages install their tools; it is not on
// PATH unless the user sourced XRT's setup.sh.
const xrtDefaultDir = "/opt/xilinx/xrt/bin"

// XRTOptions configure an XRTLoader.
type XRTOptions struct {
	// Device is the card's user function ("0000:b3:00.1"); zero omits
	// --device, which XRT accepts when there is one card.
	Device string
	// Path is the list of directories (PATH syntax) searched for xrt-smi,
	// then xbutil; zero means $PATH and then /opt/xilinx/xrt/bin.
	Path string
	// Platform is the card's platform (VBNV), if known: the xclbin's must
	// equal it.
	Platform string
	// InterfaceID is the card's shell interface UUID, if known.
	InterfaceID string
	// Part is the card's FPGA part, if known.
	Part string
	// TempDir is where the xclbin is written for the tool; zero means
	// os.TempDir().
	TempDir string
	// Logger receives load events; nil discards them.
	Logger *slog.Logger
}

// XRTLoader programs an AMD Alveo card's xclbin through the installed XRT
// tool: `xrt-smi program --device BDF --user FILE` (or xbutil, the same
// command before XRT 2024.2). XRT owns the card's kernel interface (xocl and
// xclmgmt ioctls, whose structs change between releases), so kvloom does
// not hand-roll it.
type XRTLoader struct {
	opts XRTOptions
	log  *slog.Logger
}

var _ Loader = (*XRTLoader)(nil)

// NewXRTLoader returns a loader for XRT cards.
func NewXRTLoader(opts XRTOptions) (*XRTLoader, error) {
	if opts.Path == "" {
		opts.Path = os.Getenv("PATH") + string(filepath.ListSeparator) + xrtDefaultDir
	}
	if opts.InterfaceID != "" {
		id, err := NormalizeUUID(opts.InterfaceID)
		if err != nil {
			return nil, fmt.Errorf("new xrt loader: InterfaceID: %w", err)
		}
		opts.InterfaceID = id
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &XRTLoader{opts: opts, log: log}, nil
}

// Name returns "xrt".
func (l *XRTLoader) Name() string { return "xrt" }

// Tool returns the path of the XRT tool the loader would run, or an error
// wrapping ErrToolMissing that says what to install.
func (l *XRTLoader) Tool() (string, error) {
	dirs := filepath.SplitList(l.opts.Path)
	for _, name := range xrtTools {
		for _, dir := range dirs {
			if dir == "" {
				continue
			}
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("neither xrt-smi nor xbutil found in %s: install XRT (Debian/Ubuntu: apt install libxrt-utils; "+
		"or the xrt package from https://github.com/Xilinx/XRT/releases, which installs to %s) and the card's platform packages: %w",
		l.opts.Path, xrtDefaultDir, ErrToolMissing)
}

// xclbin returns the image's xclbin and checks it against the manifest and
// the card.
func (l *XRTLoader) xclbin(img *Image) ([]byte, error) {
	m := img.manifest
	sec, ok := img.Section(PayloadXclbin)
	if !ok {
		return nil, &IncompatibleError{Field: "payload", Image: "no xclbin2 section", Target: "an xclbin2"}
	}
	x, err := ParseXclbin(sec.Data)
	if err != nil {
		return nil, err
	}
	var errs []error
	if err := checkIdentity(m, identity{Kind: KindFPGA, Part: l.opts.Part, Driver: l.opts.Platform, InterfaceID: l.opts.InterfaceID}); err != nil {
		errs = append(errs, err)
	}
	if m.Target.InterfaceID != "" && m.Target.InterfaceID != x.InterfaceUUID {
		errs = append(errs, &IncompatibleError{Field: "target.interface_id", Image: m.Target.InterfaceID, Target: x.InterfaceUUID, Reason: "the manifest and the xclbin header disagree"})
	}
	if l.opts.Platform != "" && x.PlatformVBNV != l.opts.Platform {
		errs = append(errs, &IncompatibleError{Field: "xclbin platform", Image: x.PlatformVBNV, Target: l.opts.Platform})
	}
	if l.opts.InterfaceID != "" && x.InterfaceUUID != l.opts.InterfaceID {
		errs = append(errs, &IncompatibleError{Field: "xclbin interface_uuid", Image: x.InterfaceUUID, Target: l.opts.InterfaceID, Reason: "the xclbin was built for another shell"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sec.Data, nil
}

// Check verifies the tool is installed and the xclbin fits the card.
func (l *XRTLoader) Check(_ context.Context, img *Image) error {
	_, err := l.Tool()
	if err == nil {
		_, err = l.xclbin(img)
	}
	if err != nil {
		return fmt.Errorf("check image %s for xrt: %w", img, err)
	}
	return nil
}

// Load writes the xclbin to a temporary file and runs the XRT tool's
// program command; the tool's success is the ready signal.
func (l *XRTLoader) Load(ctx context.Context, img *Image) error {
	tool, err := l.Tool()
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	data, err := l.xclbin(img)
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	f, err := os.CreateTemp(l.opts.TempDir, "kvloom-*.xclbin")
	if err != nil {
		return fmt.Errorf("load image %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	path := f.Name()
	defer os.Remove(path)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("load image %s: write %s: %w: %w", img, path, err, ErrTargetUnchanged)
	}
	args := []string{"program"}
	if l.opts.Device != "" {
		args = append(args, "--device", l.opts.Device)
	}
	args = append(args, "--user", path)
	cmd := exec.CommandContext(ctx, tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("load image %s: %s %s: %w: %s: %w", img, filepath.Base(tool), strings.Join(args, " "), err, tail(out.String(), 2000), ErrLoadFailed)
	}
	l.log.Info("xrt_programmed", "tool", tool, "device", l.opts.Device, "output", tail(out.String(), 500))
	return nil
}

// tail returns at most the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
