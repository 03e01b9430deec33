#!/usr/bin/env bash
# GPU checks for kvloom's gpu package, run once on a machine with an NVIDIA
# GPU and driver:
#   - NVML discovery and the topology matrix (kvloom topo, nvidia-smi topo -m),
#   - the hardware tests (go test -tags hw: NVML and its NUMA affinity
#     against nvidia-smi's, CUDA copies both ways in, zero-copy pipeline,
#     cancellation),
#   - host→device bandwidth through the CUDA DMA backend for 1 MiB–1 GiB,
#     both ways in (pinned-pool: a layer written into the pinned pool and
#     handed over with CopyHost, no staging copy; pageable: CopyLayer from
#     Go memory, staged through the pool), each against one plain pinned
#     cuMemcpyHtoD of the same size and against the sim backend's link
#     model,
#   - a sweep of the pageable path's staging workers and chunk sizes, to
#     set the defaults for this kind of machine.
#
# Usage:
#   scripts/gpu-check.sh build [DIR]   on a machine with Go (this one): build
#                                      kvloom and gpu.test into DIR
#                                      (default bin/gpu-check) to carry over
#   scripts/gpu-check.sh [OUTDIR]      on the GPU machine: run everything and
#                                      write OUTDIR/gpu-check.txt (default
#                                      $OUT if set, else ./gpu-check-out)
#
# On the GPU machine the script uses the prebuilt binaries in bin/gpu-check
# when they are there; otherwise it builds them with Go (PATH or
# /usr/local/go/bin), which needs the module cache or network access.
# Environment: BENCHTIME (default 1s per size and path), SWEEP_BENCHTIME
# (default 300ms per sweep point; "0" skips the sweep), GPU_CHECK_BIN
# (binary dir).
# Exit status: 0 when every step passed; the results file is written either way.
set -uo pipefail
cd "$(dirname "$0")/.."

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
  return 1
}

build() {
  local dir=$1 gobin
  gobin=$(find_go) || { echo "gpu-check: no Go toolchain (PATH or /usr/local/go/bin)" >&2; return 1; }
  mkdir -p "$dir"
  # cgo: go-nvml needs it. -trimpath keeps the binaries free of this tree's paths.
  CGO_ENABLED=1 CGO_CFLAGS="${CGO_CFLAGS:--O2 -Wno-deprecated-declarations}" \
    "$gobin" build -trimpath -ldflags "-s -w" -o "$dir/kvloom" ./cmd/kvloom &&
  CGO_ENABLED=1 CGO_CFLAGS="${CGO_CFLAGS:--O2 -Wno-deprecated-declarations}" \
    "$gobin" test -trimpath -ldflags "-s -w" -c -tags hw -o "$dir/gpu.test" ./gpu &&
  echo "gpu-check: built $dir/kvloom and $dir/gpu.test (glibc ≥ $(glibc_needed "$dir"))"
}

# glibc_needed prints the highest GLIBC symbol version the binaries need.
glibc_needed() {
  { objdump -T "$1/kvloom" "$1/gpu.test" 2>/dev/null || true; } |
    grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -k3,3n | tail -1 | sed 's/GLIBC_//'
}

if [ "${1:-}" = build ]; then
  build "${2:-bin/gpu-check}"
  exit $?
fi

outdir=${1:-${OUT:-gpu-check-out}}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
res="$outdir/gpu-check.txt"
bin=${GPU_CHECK_BIN:-bin/gpu-check}
status=0

step() { # step TITLE CMD...: run, append to the results, remember failure
  local title=$1; shift
  { echo; echo "== $title"; echo "\$ $*"; } >>"$res"
  "$@" >>"$res" 2>&1
  local rc=$?
  echo "(exit $rc)" >>"$res"
  if [ $rc -ne 0 ]; then status=1; echo "gpu-check: FAILED: $title (exit $rc)" >&2; else echo "gpu-check: ok: $title" >&2; fi
  return 0
}

{
  echo "kvloom gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname), kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "glibc: $(ldd --version 2>/dev/null | head -1)"
} >"$res"

if [ ! -x "$bin/kvloom" ] || [ ! -x "$bin/gpu.test" ]; then
  bin="$outdir/bin"
  if ! build "$bin" >>"$res" 2>&1; then
    echo "gpu-check: no prebuilt binaries in ${GPU_CHECK_BIN:-bin/gpu-check} and building failed;" \
      "run 'scripts/gpu-check.sh build' on a machine with Go and carry bin/gpu-check over" | tee -a "$res" >&2
    exit 1
  fi
fi
bin=$(cd "$bin" && pwd)
echo "binaries: $bin (need glibc ≥ $(glibc_needed "$bin"))" >>"$res"

if command -v nvidia-smi >/dev/null 2>&1; then
  step "nvidia-smi -L" nvidia-smi -L
  step "nvidia-smi topo -m (for comparison)" nvidia-smi topo -m
else
  echo "nvidia-smi not found" >>"$res"
fi
step "kvloom topo" "$bin/kvloom" topo
step "kvloom topo --json" "$bin/kvloom" topo --json
step "kvloom topo --export" "$bin/kvloom" topo --export "$outdir/topology.yaml" --gpu-model H100-SXM
# The tests read testdata/ relative to the package directory.
(
  cd gpu &&
  step "hardware tests (go test -tags hw)" "$bin/gpu.test" -test.run '^TestHW' -test.v -test.count=1 &&
  step "host→device bandwidth" "$bin/gpu.test" -test.run '^$' -test.bench '^BenchmarkHWHostToDevice$' \
    -test.benchtime "${BENCHTIME:-1s}" -test.count=1
  if [ "${SWEEP_BENCHTIME:-300ms}" != 0 ]; then
    step "pageable staging sweep" "$bin/gpu.test" -test.run '^$' -test.bench '^BenchmarkHWStagingSweep$' \
      -test.benchtime "${SWEEP_BENCHTIME:-300ms}" -test.count=1
  fi
  exit $status
) || status=1

# metrics NAME-PREFIX: one line per benchmark under the prefix: its name
# after the prefix (GOMAXPROCS suffix dropped), then the metrics the tables
# want, "-" where absent.
metrics() {
  awk -v prefix="$1" 'index($1, prefix) == 1 {
      name = substr($1, length(prefix) + 1); sub(/-[0-9]+$/, "", name)
      path = pin = ratio = model = "-"
      for (i = 3; i < NF; i++) {
        if ($(i+1) == "path-GB/s") path = $i
        if ($(i+1) == "baseline-M/s") pin = sprintf("%.2f", $i / 1000)
        if ($(i+1) == "x-vs-pinned-memcpy") ratio = $i
        if ($(i+1) == "x-vs-model") model = $i
      }
      print name, path, pin, ratio, model
    }' "$res"
}

{
  echo
  echo "== summary: host→device, CUDA DMA path vs pinned cuMemcpyHtoD (same size, same sub-benchmark)"
  echo "pinned-pool: layer written into the pinned pool, CopyHost (no staging copy); pageable: CopyLayer from Go memory"
  printf '%-8s %-12s %10s %12s %12s %10s\n' size path path-GB/s pinned-GB/s x-vs-pinned x-vs-model
  metrics BenchmarkHWHostToDevice/ | while read -r name path pin ratio model; do
    printf '%-8s %-12s %10s %12s %12s %10s\n' "${name%%/*}" "${name#*/}" "$path" "$pin" "$ratio" "$model"
  done
  if grep -q '^BenchmarkHWStagingSweep/' "$res"; then
    echo
    echo "== summary: pageable staging sweep (size/workers/chunk)"
    printf '%-32s %10s %12s %12s\n' point path-GB/s pinned-GB/s x-vs-pinned
    metrics BenchmarkHWStagingSweep/ | while read -r name path pin ratio model; do
      printf '%-32s %10s %12s %12s\n' "$name" "$path" "$pin" "$ratio"
    done
  fi
  echo
  echo "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
} >>"$res"
cat "$res"
exit $status
