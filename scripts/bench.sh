#!/usr/bin/env bash
# Runs every benchmark once and prints the ratio figures the issues name.
# Ratios are custom metrics whose unit starts with "x-vs-" (subject throughput
# divided by a baseline measured in the same run) or ends in "-ratio".
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=${BENCH_PKGS:-./...}
benchtime=${BENCHTIME:-1s}
out=${BENCH_OUT:-bench.out}
go test -run '^$' -bench "${BENCH:-.}" -benchtime "$benchtime" -benchmem -timeout 60m $pkgs | tee "$out"
echo
echo "== ratio figures (subject / baseline, same run) =="
awk '
  /^pkg:/ { pkg = $2 }
  /^Benchmark/ {
    line = ""
    for (i = 3; i < NF; i++) {
      if ($(i+1) ~ /^x-vs-/ || $(i+1) ~ /-ratio$/ || $(i+1) ~ /^B\/token/ || $(i+1) ~ /tokens\/s$/) {
        line = line sprintf("  %s=%s", $(i+1), $i)
      }
    }
    if (line != "") printf "%-40s %-60s%s\n", pkg, $1, line
  }' "$out"
echo
echo "machine: $(go env GOOS)/$(go env GOARCH), $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //")"
