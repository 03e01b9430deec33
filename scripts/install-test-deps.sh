#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those that are missing.
# Runs apt-get update at most once. Without root it names what to install and fails.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [clang]=clang
  [llc]=llvm
  [bpftool]=bpftool
  [tshark]=tshark
  [lspci]=pciutils
  [promtool]=prometheus
  [ip]=iproute2
  [protoc]=protobuf-compiler
)
# headers, not commands
declare -A need_files=(
  [/usr/include/bpf/bpf_helpers.h]=libbpf-dev
  [/usr/include/linux/fpga-dfl.h]=linux-libc-dev
)

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
for f in "${!need_files[@]}"; do
  [ -e "$f" ] || missing+=("${need_files[$f]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "missing test dependencies: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing test dependencies: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
