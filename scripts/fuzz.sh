#!/usr/bin/env bash
# Fuzzes each named target (fuzz/fuzz_<name>.c) with libFuzzer for
# FUZZ_SECONDS and prints one line per target: executions, coverage, crashes.
# New inputs go to build-fuzz/corpus/<name> (not committed); a crash is kept
# in build-fuzz/crashes/<name>/ — copy it to fuzz/regressions/<name>/ so
# `make test` replays it from then on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${FUZZ_SECONDS:-60}
out=build-fuzz
CLANG=${CLANG:-clang-14}

if ! command -v "$CLANG" >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: installing clang-14 and libFuzzer (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends clang-14 libclang-rt-14-dev >/dev/null
fi

mkdir -p "$out"
status=0
for name in "$@"; do
  bin=$out/$name
  "$CLANG" -g -O1 -std=c11 -D_GNU_SOURCE -Ilib -fsanitize=fuzzer,address,undefined \
    -o "$bin" "fuzz/fuzz_$name.c" lib/*.c -ljansson -lcrypto -lm
  mkdir -p "$out/corpus/$name" "$out/crashes/$name" "fuzz/corpus/$name"
  log=$out/$name.log
  set +e
  "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/crashes/$name/" "$out/corpus/$name" "fuzz/corpus/$name" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
  crashes=$(find "$out/crashes/$name" -type f | wc -l)
  printf 'fuzz %-12s %10s execs  cov %5s  features %6s  crashes %s  (%ss)\n' \
    "$name" "$execs" "$cov" "$ft" "$crashes" "$secs"
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    status=1
    echo "  see $log and $out/crashes/$name/"
  fi
done
exit $status
