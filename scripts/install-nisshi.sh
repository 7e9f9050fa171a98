#!/usr/bin/env bash
# Installs what geoclock's tests need, once, into a cache outside the clone:
# the Debian packages its -sys crates build against, a headless browser
# (chromium and its WebDriver, chromium-driver: the report page and the live
# map are checked and benchmarked in a real browser), and the nisshi
# Kafka-protocol broker (design.md §6). The nisshi build takes ~20 minutes on
# 2 cores the first time; later runs find it in the cache and return at once.
set -euo pipefail

CACHE="${GEOCLOCK_CACHE:-$HOME/.cache/geoclock}"
NISSHI_VERSION=0.8.1
BIN="$CACHE/tools/bin/nisshi"

need_apt=()
for pkg in pkg-config zlib1g-dev make g++ libclang-dev chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
  echo "nisshi $NISSHI_VERSION: $BIN"
  exit 0
fi
echo "building nisshi $NISSHI_VERSION into $CACHE/tools (about 20 minutes the first time)"
mkdir -p "$CACHE/tools"
CARGO_TARGET_DIR="$CACHE/nisshi-build" cargo install nisshi --version "$NISSHI_VERSION" --locked \
  --ignore-rust-version --root "$CACHE/tools"
"$BIN" --version
