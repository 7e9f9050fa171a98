#!/usr/bin/env bash
# Starts a local nisshi broker on 127.0.0.1 for trying geoclock by hand:
#   scripts/broker.sh [PORT] [memory|sqlite]      (defaults: 9092 memory)
# Runs in the foreground; Ctrl-C stops it. Tests start their own brokers.
set -euo pipefail
PORT="${1:-9092}"
STORAGE="${2:-memory}"
CACHE="${GEOCLOCK_CACHE:-$HOME/.cache/geoclock}"
bash "$(dirname "$0")/install-nisshi.sh" >/dev/null
case "$STORAGE" in
  memory) ENGINE="memory://nisshi/" ;;
  sqlite) mkdir -p "$CACHE/broker" && cd "$CACHE/broker" && ENGINE="sqlite://nisshi.db" ;;
  *) echo "storage must be memory or sqlite" >&2; exit 2 ;;
esac
exec "$CACHE/tools/bin/nisshi" broker --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine "$ENGINE"
