#!/usr/bin/env bash
# Builds the release preset and runs examples/bench_dist.cpp (the C workload of bench_embedding,
# tied, sparse SGD and SparseAdam) at 1 process x 1 thread, 2 processes x 1 thread and
# 1 process x 2 threads, on the same global batch, then prints one table: steps/s, the speed-up
# over 1 process x 1 thread, the median time of each phase and the bytes each step sends
# (DataParallel::last_stats()). Extra arguments go to every bench_dist run (e.g. --optimizers sgd
# or --min-seconds 10). See docs/distributed.md. Measure on an idle machine: it prints the load
# average before and after and refuses to start above 0.5 (--force to run anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target bench_dist
load=$(cut -d' ' -f1 /proc/loadavg)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $force -eq 0 ]] && awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench_dist.sh: the 1-minute load average is $load (> 0.5): wait, or pass --force" >&2
  exit 1
fi
bench=./build/release/examples/bench_dist
mpirun=(mpirun --bind-to none --mca btl self,vader)
[[ $(id -u) -eq 0 ]] && mpirun+=(--allow-run-as-root)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bench" --threads 1 "$@" | tee -a "$out"
"${mpirun[@]}" -np 2 "$bench" --threads 1 "$@" | tee -a "$out"
"$bench" --threads 2 "$@" | tee -a "$out"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
# RESULT <P>p x <T>t <optimizer> steps/s step_ms compute_ms reduce_ms update_ms sparse_bytes dense_bytes
awk '
  $1 == "RESULT" {
    config = $2 " " $3 " " $4; o = $5
    if (!(o in seen)) { seen[o] = 1; order[++n] = o }
    rows[o, ++count[o]] = sprintf("%s|%.2f|%.1f|%.1f|%.1f|%.1f|%.1f", config, $6, $7, $8, $9, $10, ($11 + $12) / 1e6)
    if (config == "1p x 1t") base[o] = $6
    rate[o, count[o]] = $6
  }
  END {
    print "| workload | processes x threads | steps/s | vs 1p x 1t | ms/step | forward+backward | reduce | optimizer | MB sent/step |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for (k = 1; k <= n; ++k) {
      o = order[k]
      for (i = 1; i <= count[o]; ++i) {
        split(rows[o, i], f, "|")
        printf "| C/%s-tied | %s | %s | %.2fx | %s | %s | %s | %s | %s |\n", o, f[1], f[2], rate[o, i] / base[o], f[3], f[4], f[5], f[6], f[7]
      }
    }
  }' "$out"
