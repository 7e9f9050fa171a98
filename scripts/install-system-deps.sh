#!/usr/bin/env bash
# The system packages geoclock needs, installed when missing:
#   scripts/install-system-deps.sh build   # to build: a C/C++ toolchain, libclang (RocksDB's
#                                          # bindgen), zlib, OpenSSL and Cyrus SASL (librdkafka)
#   scripts/install-system-deps.sh test    # and what the tests run: headless Chromium (the
#                                          # report and map pages) and Prometheus (dashboards, alerts)
# On Debian/Ubuntu it installs them with apt-get (as root, or with sudo when
# that needs no password); otherwise it prints the one command to run and
# exits non-zero, naming what is missing.
set -euo pipefail
what="${1:-build}"
pkgs=(pkg-config zlib1g-dev make g++ libclang-dev libssl-dev libsasl2-dev)
if [ "$what" = test ]; then
  pkgs+=(chromium chromium-driver prometheus)
fi

if ! command -v dpkg >/dev/null 2>&1; then
  if command -v ldconfig >/dev/null 2>&1 && ldconfig -p | grep -q libclang && ldconfig -p | grep -q libsasl2; then
    exit 0
  fi
  echo "geoclock needs a C/C++ toolchain, pkg-config, libclang, zlib, OpenSSL and Cyrus SASL development files" >&2
  echo "(Debian/Ubuntu: ${pkgs[*]}); install them with your package manager and run this again." >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "geoclock needs these Debian packages: ${missing[*]}" >&2
  echo "run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
