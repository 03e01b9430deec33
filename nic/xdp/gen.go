package xdp

// The BPF object is built from bpf/kvlp.c by bpf2go; its Go wrapper
// (kvlp_bpfel.go) and object (kvlp_bpfel.o) are committed so that building
// kvloom needs no clang. `make generate` reruns this with clang, llvm-strip
// and the kernel UAPI and libbpf headers (Debian: clang, llvm, libbpf-dev,
// linux-libc-dev). The multiarch include directory holds <asm/types.h>.
//go:generate sh -c "go tool bpf2go -tags linux -target bpfel -type kvlp_key -type kvlp_value -type kvlp_event -type kvlp_done -type kvlp_counter -cflags '-O2 -g -Wall -Werror' kvlp bpf/kvlp.c -- -I/usr/include/$(uname -m)-linux-gnu"
