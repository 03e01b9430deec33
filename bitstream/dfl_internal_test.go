package bitstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDFLPortPREncodingHandDerived checks the encoding against bytes derived
// by hand from include/uapi/linux/fpga-dfl.h: four __u32 (argsz, flags,
// port_id, buffer_size) then a __u64 buffer_address, no padding, host byte
// order; _IO(0xB6, 0x80) = 0xB6<<8 | 0x80.
func TestDFLPortPREncodingHandDerived(t *testing.T) {
	got := EncodeDFLPortPR(3, 0x1234, 0x1122334455667788)
	var want []byte
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 { // little-endian host
		want = []byte{
			24, 0, 0, 0, // argsz
			0, 0, 0, 0, // flags
			3, 0, 0, 0, // port_id
			0x34, 0x12, 0, 0, // buffer_size
			0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // buffer_address
		}
	} else {
		want = []byte{0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0x12, 0x34, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeDFLPortPR = % x\nwant              % x", got, want)
	}
	if DFLFMEPortPR != 0xB6<<8|0x80 {
		t.Fatalf("DFLFMEPortPR = %#x", DFLFMEPortPR)
	}
}

// dflProbe prints, from the kernel's own uapi header, the ioctl number, the
// struct's size and offsets, and the bytes of a filled struct.
const dflProbe = `
#include <stdio.h>
#include <stddef.h>
#include <linux/fpga-dfl.h>
int main(void) {
	struct dfl_fpga_fme_port_pr pr = {
		.argsz = sizeof(pr), .flags = 0, .port_id = 3,
		.buffer_size = 0x1234, .buffer_address = 0x1122334455667788ULL,
	};
	const unsigned char *p = (const unsigned char *)&pr;
	printf("ioctl %lx\n", (unsigned long)DFL_FPGA_FME_PORT_PR);
	printf("size %zu\n", sizeof(pr));
	printf("offsets %zu %zu %zu %zu %zu\n", offsetof(struct dfl_fpga_fme_port_pr, argsz),
		offsetof(struct dfl_fpga_fme_port_pr, flags), offsetof(struct dfl_fpga_fme_port_pr, port_id),
		offsetof(struct dfl_fpga_fme_port_pr, buffer_size), offsetof(struct dfl_fpga_fme_port_pr, buffer_address));
	printf("bytes");
	for (size_t i = 0; i < sizeof(pr); i++) printf(" %02x", p[i]);
	printf("\n");
	return 0;
}
`

// TestDFLPortPREncodingMatchesKernelHeader compiles dflProbe against the
// installed <linux/fpga-dfl.h> and compares what the C compiler lays out
// with EncodeDFLPortPR.
func TestDFLPortPREncodingMatchesKernelHeader(t *testing.T) {
	cc, err := exec.LookPath("clang")
	if err != nil {
		t.Fatal("clang not found: install clang (Debian: apt-get install clang), or run make test-deps")
	}
	if _, err := os.Stat("/usr/include/linux/fpga-dfl.h"); err != nil {
		t.Fatal("/usr/include/linux/fpga-dfl.h not found: install the kernel's uapi headers (Debian: apt-get install linux-libc-dev)")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "probe.c"), filepath.Join(dir, "probe")
	if err := os.WriteFile(src, []byte(dflProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compile the header probe: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run the header probe: %v", err)
	}
	var b strings.Builder
	for _, x := range EncodeDFLPortPR(3, 0x1234, 0x1122334455667788) {
		fmt.Fprintf(&b, " %02x", x)
	}
	want := "ioctl b680\nsize 24\noffsets 0 4 8 12 16\nbytes" + b.String() + "\n"
	if string(out) != want {
		t.Fatalf("the kernel header says\n%s\nkvloom encodes\n%s", out, want)
	}
}

// TestSysIoctlReachesKernel runs the real ioctl(2) path with the PR request
// on a device that does not implement it: the kernel must answer ENOTTY,
// which shows the request number and argument pointer got through.
func TestSysIoctlReachesKernel(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	arg := EncodeDFLPortPR(0, 4, 0)
	err = sysIoctl(f.Fd(), DFLFMEPortPR, arg)
	if !errors.Is(err, syscall.ENOTTY) {
		t.Fatalf("ioctl(/dev/null, DFL_FPGA_FME_PORT_PR) = %v, want ENOTTY", err)
	}
	if err := sysIoctl(f.Fd(), DFLFMEPortPR, nil); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("ioctl with no argument = %v, want EINVAL", err)
	}
}
