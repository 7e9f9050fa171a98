#!/usr/bin/env bash
# Installs what geoclock's tests need, once, into a cache outside the clone:
# the Debian packages its -sys crates build against, a headless browser
# (chromium and chromium-driver: the report page and the live map are checked
# in a real browser), Prometheus (the
# dashboards and alerts are checked on a real server), and the nisshi
# Kafka-protocol broker (design.md §6). The nisshi build takes ~20 minutes on
# 2 cores the first time; later runs find it in the cache and return at once.
set -euo pipefail

CACHE="${GEOCLOCK_CACHE:-$HOME/.cache/geoclock}"
NISSHI_VERSION=0.8.1
BIN="$CACHE/tools/bin/nisshi"

bash "$(dirname "$0")/install-system-deps.sh" test

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
  echo "nisshi $NISSHI_VERSION: $BIN"
  exit 0
fi
echo "building nisshi $NISSHI_VERSION into $CACHE/tools (about 20 minutes the first time)"
mkdir -p "$CACHE/tools"
CARGO_TARGET_DIR="$CACHE/nisshi-build" cargo install nisshi --version "$NISSHI_VERSION" --locked \
  --ignore-rust-version --root "$CACHE/tools"
"$BIN" --version
