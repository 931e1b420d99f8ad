#!/usr/bin/env bash
# `make bench`: every benchmark, each printing ratios or figures measured in
# this run (the machines are shared and noisy: compare within a run, not
# across runs). Not pass/fail.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${TM_BUILD:-$root/build}
export TM_BUILD=$build
status=0
run() { echo "== $*"; "$@" || { echo "   (failed: $*)"; status=1; }; }

[ -x "$build/bench/engine_bench" ] && run "$build/bench/engine_bench"
[ -x "$build/bench/worst_bench" ] && run "$build/bench/worst_bench"
run perl -I t/lib bench/edge-throughput.pl "${BENCH_SECONDS:-3}" "${BENCH_ROUNDS:-3}"
run perl -I t/lib bench/edge-events.pl "${BENCH_SECONDS:-3}" "${BENCH_ROUNDS:-3}"
run perl -I t/lib bench/edge-targeting.pl "${BENCH_SECONDS:-3}" "${BENCH_ROUNDS:-3}"
run perl -I t/lib bench/edge-bulk.pl
run perl -I t/lib bench/edge-sync.pl
run perl -I t/lib bench/snapshot-file.pl
run perl -I t/lib bench/worker.pl
run perl -I t/lib bench/sse.pl
exit $status
