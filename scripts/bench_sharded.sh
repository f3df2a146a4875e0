#!/usr/bin/env bash
# Builds the release preset and runs examples/bench_sharded.cpp (a row-wise sharded tied table,
# the C workload of bench_embedding, sparse SGD and SparseAdam) for tables of 2,000,000 x 64 and
# 8,000,000 x 64 at R = 1 and R = 2 ranks on the same global batch, one process (or mpirun) per
# run so that each run's peak RSS is its own, then prints one table: per rank, the shard and
# optimizer-state bytes against (whole table + state) / R, the step's rows and the transient
# memory above shard + state (resident growth - shard - state), the resident growth against
# issue 17's allowance (1.1 x (whole + state) / R + the step's rows), the peak RSS, the median
# step time by phase, steps/s and the bytes sent per step to other ranks.
# Extra arguments go to every bench_sharded run (e.g. --min-seconds 10). --rows "2000000 500000"
# replaces the table sizes. See docs/sharding.md. Measure on an idle machine: it prints the load
# average before and after and refuses to start above 0.5 (--force to run anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
force=0 rows="2000000 8000000"
while [[ $# -gt 0 ]]; do
  case $1 in
    --force) force=1; shift ;;
    --rows) rows=$2; shift 2 ;;
    *) break ;;
  esac
done
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target bench_sharded
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $force -eq 0 ]] && awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench_sharded.sh: the 1-minute load average is $load (> 0.5): wait, or pass --force" >&2
  exit 1
fi
bench=./build/release/examples/bench_sharded
mpirun=(mpirun --bind-to none --mca btl self,vader)
[[ $(id -u) -eq 0 ]] && mpirun+=(--allow-run-as-root)
out=$(mktemp)
trap 'rm -f "$out" "$out.rows"' EXIT
for n in $rows; do
  for o in sgd sparse_adam; do
    "$bench" --rows "$n" --optimizer "$o" "$@" | tee -a "$out"
    "${mpirun[@]}" -np 2 "$bench" --rows "$n" --optimizer "$o" "$@" | tee -a "$out"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
# RESULT N optimizer R rank whole_MB, then (bench_sharded.cpp, enum Col): local_rows shard_MB
# state_MB rss_before_MB vmhwm_MB maxrss_MB growth_MB step_rows_MB forward_MB backward_MB
# step_ms forward_ms backward_ms reduce_ms optimizer_ms steps_per_s
awk '
  $1 == "RESULT" {
    n = $2; o = $3; R = $4; k = $5; whole = $6
    shard = $8; state = $9; maxrss = $12; growth = $13; steprows = $14
    share = whole / R; allowed = 1.1 * share + steprows; transient = growth - shard - state
    printf "| %.0fM x 64, %s | %d | %d | %.0f | %.0f | %.3f | %.0f | %.0f | %.1fx | %.3f | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f |\n",
      n / 1e6, o, R, k, shard, state, (shard + state) / share, steprows, transient, transient / steprows,
      growth / share, growth <= allowed ? "yes" : "**no**", maxrss, $17, $18, $19, $20, $21, $22, $15, $16
  }' "$out" >"$out.rows"
echo "| table, optimizer | R | rank | shard MB | state MB | (shard + state) / (whole / R) | step rows MB | transient MB | transient / step rows | growth / (whole / R) | growth <= 1.1 x whole / R + step rows | peak RSS MB | ms/step | forward | backward | reduce | optimizer | steps/s | MB sent fwd | MB sent bwd |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
cat "$out.rows"
