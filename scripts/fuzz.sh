#!/usr/bin/env bash
# A libFuzzer campaign (clang-14, ASan + UBSan) for one fuzz target of tests/fuzz/.
#
#   bash scripts/fuzz.sh [target] [seconds] [--merge]
#
# target: embedding (default), checkpoint or api; seconds: 600 by default. The campaign starts from the checked-in
# corpus tests/fuzz/corpus/<target>/ and grows a working corpus in build/fuzz/work-<target>/;
# a failing input is written to build/fuzz/artifacts/ (replay it with
# build/fuzz/tests/fuzz/fuzz_<target> <file>, or with the g++ replay binary). --merge adds the
# inputs that found new coverage to the checked-in corpus (minimised by libFuzzer's -merge=1).
# Prints libFuzzer's final line: "Done <executions> runs in <seconds> second(s)".
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-embedding}"
seconds="${2:-600}"
merge="${3:-}"
bash scripts/install-deps.sh fuzz
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j2 --target "fuzz_${target}"
bin="build/fuzz/tests/fuzz/fuzz_${target}"
seed="tests/fuzz/corpus/${target}"
work="build/fuzz/work-${target}"
mkdir -p "$work" build/fuzz/artifacts
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
max_len=256
extra=()
if [ "$target" = api ]; then
  max_len=1024       # a program of up to 48 calls
  extra=(-entropic=0)  # with ~40k features, entropic scheduling took 60 % of the time (perf): 2.5x the runs
fi
"$bin" -max_total_time="$seconds" -print_final_stats=1 -max_len="$max_len" "${extra[@]}" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=build/fuzz/artifacts/ "$work" "$seed" 2>&1 | tee "build/fuzz/${target}.log" | grep -E "^#[0-9]+ +(INITED|DONE)|^Done|ERROR|SUMMARY|stat::" || true
status=${PIPESTATUS[0]}
if [ "$merge" = "--merge" ]; then
  "$bin" -merge=1 -max_len="$max_len" "$seed" "$work" 2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files" || true
fi
exit "$status"
