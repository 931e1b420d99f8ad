#!/bin/sh
# Builds the nginx module of an earlier release, for the rolling-upgrade
# test (t/nginx-rolling-upgrade.t): the sources of REV from this
# repository's own history (git archive), built the way `make` builds
# today's module, plain (no sanitizers). Reuses an earlier build in OUTDIR.
#   scripts/build-old-edge.sh REV OUTDIR    prints the module's path
set -eu
rev=$1
out=$2
so="$out/build/nginx/ngx_http_togglemaster_module.so"
if [ -f "$so" ]; then
    echo "$so"
    exit 0
fi
rm -rf "$out/src"
mkdir -p "$out/src" "$out/build"
git -C "$(dirname "$0")/.." archive "$rev" | tar -x -C "$out/src"
if ! make -C "$out/src" BUILD="$out/build" SAN= "$so" >"$out/build.log" 2>&1; then
    tail -n 30 "$out/build.log" >&2
    exit 1
fi
echo "$so"
