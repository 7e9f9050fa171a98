#!/usr/bin/env bash
# Supply-chain check: `cargo deny check` (advisories, licences, duplicate
# majors, sources; policy in deny.toml). Installs cargo-deny into the cache
# (~/.cache/geoclock/tools) the first time, from crates.io (a ~10 minute
# build on 2 cores).
#
# The RustSec advisory database is a git repository. It is fetched into
# ~/.cache/geoclock/advisory-dbs when the network allows; otherwise the copy
# already there is used as is (its date is printed). With no copy at all,
# the advisories check cannot run: it is reported as skipped, loudly, and
# the other checks still run. Where GitHub is out of reach, seed the cache
# from any clone of https://github.com/rustsec/advisory-db (cargo-deny's
# directory name for it is fixed):
#   git clone SNAPSHOT ~/.cache/geoclock/advisory-dbs/advisory-db-3157b0e258782691
# `fetch db` then updates it from wherever that clone came from.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${GEOCLOCK_CACHE:-$HOME/.cache/geoclock}"
TOOLS="$CACHE/tools"
DENY_VERSION=0.20.2
export GEOCLOCK_ADVISORY_DBS="$CACHE/advisory-dbs"

if ! "$TOOLS/bin/cargo-deny" --version 2>/dev/null | grep -q "$DENY_VERSION"; then
    echo "== installing cargo-deny $DENY_VERSION into $TOOLS"
    CARGO_TARGET_DIR="$CACHE/cargo-deny-build" cargo install cargo-deny --version "$DENY_VERSION" --locked --root "$TOOLS"
fi
DENY="$TOOLS/bin/cargo-deny"
mkdir -p "$GEOCLOCK_ADVISORY_DBS"

checks=(bans licenses sources)
if timeout 120 "$DENY" --log-level error fetch db 2>/dev/null; then
    echo "== advisory database fetched"
    checks+=(advisories)
    fetch=()
elif compgen -G "$GEOCLOCK_ADVISORY_DBS/advisory-db-*/.git" >/dev/null || compgen -G "$GEOCLOCK_ADVISORY_DBS/advisory-db-*/crates" >/dev/null; then
    db=$(ls -d "$GEOCLOCK_ADVISORY_DBS"/advisory-db-* | head -1)
    echo "== advisory database not reachable; using the cached copy in $db ($(git -C "$db" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
    checks+=(advisories)
    fetch=(--offline)
else
    echo "== SKIPPED advisories: no advisory database reachable or cached in $GEOCLOCK_ADVISORY_DBS"
    fetch=(--offline)
fi
echo "== cargo deny check ${checks[*]}"
exec "$DENY" "${fetch[@]}" check "${checks[@]}"
