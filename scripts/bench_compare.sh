#!/usr/bin/env bash
# Interleaved speed comparison of two bench_embedding binaries (e.g. main's and a branch's): R rounds of OLD then NEW
# at 1 and 2 threads (hitch only), PyTorch once per thread count, one table per thread count. See docs/performance.md.
#
#   bash scripts/bench_compare.sh [--rounds R] [--threads 1,2] [--force] [--no-torch] [--out DIR]
#                                 [--python PY] OLD_BINARY NEW_BINARY [bench_embedding flags, e.g. --only B/ --smoke]
#
# Each round runs OLD --threads t, then NEW --threads t, for each t (with --no-torch --no-probe and the extra
# flags); every run's output is saved in DIR (default: a fresh build/bench_compare/<UTC time>/). Then
# scripts/bench_pytorch.py runs once per thread count (as bench_embedding calls it: /usr/bin/python3, --smoke
# passed on, the MALLOC_* environment with --malloc-tuned). Per row: the median of the rounds for OLD and NEW,
# new/old, PyTorch's time, both PyTorch/hitch ratios, and "yes" when the new ratio is at least 95 % of the old
# one (new/old time <= 1/0.95); "spread" is the larger of OLD's and NEW's max/min - 1 over the rounds.
# hitch's time is read from the GB/s column where that is more precise than the 3-decimal ms column (A's step
# is ~0.016 ms: 1 digit of ms is 6 %), after checking the two agree.
# Refuses to start (exit 2) when the 1-minute load average is above 0.5, unless --force.
# Exit status: 0 every row within 5 %, 1 some row not, 2 usage error or refused.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
threads=1,2
force=0
torch=1
out=""
python=/usr/bin/python3
usage() { sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --no-torch) torch=0; shift ;;
    --out) out="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) usage ;;
    --*) echo "bench_compare.sh: unknown option $1 (bench_embedding flags go after the two binaries)" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || usage
old="$1"
new="$2"
shift 2
extra=("$@")
for b in "$old" "$new"; do
  [ -x "$b" ] || { echo "bench_compare.sh: $b is not an executable file" >&2; exit 2; }
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench_compare.sh: --rounds must be a positive integer, got $rounds" >&2; exit 2; }
[[ "$threads" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "bench_compare.sh: --threads must be like 1,2, got $threads" >&2; exit 2; }
IFS=, read -r -a thread_list <<< "$threads"
smoke=0
malloc_tuned=0
for f in "${extra[@]}"; do
  case "$f" in
    --smoke) smoke=1 ;;
    --malloc-tuned) malloc_tuned=1 ;;
    --threads|--no-torch|--script|--python) echo "bench_compare.sh: do not pass $f to bench_embedding: the script sets it" >&2; exit 2 ;;
  esac
done
parser="$(command -v python3 || echo /usr/bin/python3)"

load="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before: $load"
if [ "$force" = 0 ] && awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench_compare.sh: the 1-minute load average is ${load%% *} (> 0.5): the machine is not quiet; wait, or pass --force" >&2
  exit 2
fi
[ -n "$out" ] || out="build/bench_compare/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
{
  echo "old: $old"
  echo "new: $new"
  echo "extra flags: ${extra[*]:-}"
  echo "rounds: $rounds, threads: $threads, started $(date -u '+%F %T') UTC, load $load"
} > "$out/info.txt"

start=$SECONDS
for ((r = 1; r <= rounds; ++r)); do
  for t in "${thread_list[@]}"; do
    for side in old new; do
      bin="$old"
      [ "$side" = new ] && bin="$new"
      log="$out/r${r}-${side}-${t}t.txt"
      t0=$SECONDS
      "$bin" --no-torch --no-probe --threads "$t" "${extra[@]}" > "$log" 2>&1 ||
        { echo "bench_compare.sh: $bin failed (output in $log)" >&2; exit 2; }
      echo "round $r/$rounds: $side ${t}t done in $((SECONDS - t0)) s"
    done
  done
done
echo "hitch runs: $((SECONDS - start)) s"

if [ "$torch" = 1 ] && ! "$python" -c "import torch" 2>/dev/null; then
  echo "bench_compare.sh: $python cannot import torch (apt-get install python3-torch); no PyTorch columns" >&2
  torch=0
fi
if [ "$torch" = 1 ]; then
  # The workload names as the OLD binary printed them (the PyTorch script knows the same names).
  names="$(awk '/^== / { n++ } n == 1 && NF == 4 && $1 ~ /\// { printf "%s%s", sep, $1; sep = "," }' "$out/r1-old-${thread_list[0]}t.txt")"
  for t in "${thread_list[@]}"; do
    t0=$SECONDS
    smoke_flag=()
    [ "$smoke" = 1 ] && smoke_flag=(--smoke)
    if [ "$malloc_tuned" = 1 ]; then
      MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=536870912 \
        "$python" scripts/bench_pytorch.py --threads "$t" --workloads "$names" "${smoke_flag[@]}" > "$out/torch-${t}t.txt"
    else
      "$python" scripts/bench_pytorch.py --threads "$t" --workloads "$names" "${smoke_flag[@]}" > "$out/torch-${t}t.txt"
    fi
    echo "PyTorch ${t}t done in $((SECONDS - t0)) s"
  done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/info.txt"
echo "outputs: $out"

status=0
"$parser" - "$out" "$rounds" "$threads" "$smoke" <<'PY' | tee "$out/summary.txt" || status=$?
import os, re, statistics, sys

out, rounds, threads, smoke = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")], sys.argv[4] == "1"
# examples/bench_embedding.cpp's size_of (N, D, B, L) and lookups: only to read the time from the GB/s column,
# checked against the ms column, so a changed size falls back to the ms column rather than a wrong time.
FULL = {"A": (1000, 32, 64, 8), "B": (100000, 64, 1024, 20), "C": (2000000, 64, 4096, 40), "LM": (10000, 128, 512, 1)}
SMOKE = {"A": (100, 8, 4, 3), "B": (1000, 16, 32, 5), "C": (5000, 16, 64, 6), "LM": (200, 16, 32, 1)}


def bytes_touched(name):
    size, what = name.split("/", 1)
    if size not in FULL:
        return None
    n, d, b, l = (SMOKE if smoke else FULL)[size]
    if size == "LM":
        return b * d * 4
    tied = size == "A" or what.endswith("-tied")
    return (b * l + (b if tied else 0)) * d * 4


def seconds(name, ms, gbs):
    """The step time in seconds: from GB/s when that is the more precise column and agrees with ms."""
    t_ms = ms * 1e-3
    nbytes = bytes_touched(name)
    if nbytes is None or gbs <= 0:
        return t_ms
    t_gbs = nbytes / (gbs * 1e9)
    err_gbs = t_gbs * 0.005 / gbs  # half a unit of the printed 2nd decimal
    if err_gbs >= 0.0005e-3 or abs(t_gbs - t_ms) > 0.0005e-3 + err_gbs + 1e-12:
        return t_ms
    return t_gbs


def hitch_run(path):
    rows = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\S+/\S+)\s+([0-9.]+)\s+([0-9.]+)\s+(\S+)\s*$", line)
            if m:
                rows[m.group(1)] = seconds(m.group(1), float(m.group(2)), float(m.group(3)))
    return rows


def torch_run(path):
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 3 and p[0] == "RESULT":
                    rows[p[1]] = float(p[2])
    return rows


def cell(v, fmt):
    return "-" if v is None else format(v, fmt)


missed = False
for t in threads:
    runs = {side: [hitch_run(os.path.join(out, f"r{r}-{side}-{t}t.txt")) for r in range(1, rounds + 1)] for side in ("old", "new")}
    torch = torch_run(os.path.join(out, f"torch-{t}t.txt"))
    names = list(runs["old"][0]) + [n for n in runs["new"][0] if n not in runs["old"][0]]
    print(f"\n== {t} thread{'s' if t > 1 else ''}: median of {rounds} round{'s' if rounds > 1 else ''}, ms per step; "
          f"ratio = PyTorch / hitch; within 5 %: new ratio >= 0.95 x old ratio ==")
    print(f"{'row':<20} | {'old ms':>9} {'new ms':>9} {'new/old':>7} | {'PyTorch':>9} {'old ratio':>9} {'new ratio':>9} | "
          f"{'within 5 %?':<12} | spread")
    for name in names:
        times = {side: [run[name] for run in runs[side] if name in run] for side in runs}
        if len(times["old"]) < rounds or len(times["new"]) < rounds:
            print(f"{name:<20} | only in {'old' if times['old'] else 'new'} (or a run lacks it)")
            continue
        o, n = statistics.median(times["old"]), statistics.median(times["new"])
        spread = max(max(v) / min(v) - 1 for v in times.values())
        p = torch.get(name)
        ro, rn = (p / o, p / n) if p is not None else (None, None)
        ok = n / o <= 1 / 0.95
        missed |= not ok
        verdict = "NO" if not ok else "yes (faster)" if n / o < 0.95 else "yes"
        print(f"{name:<20} | {o * 1e3:>9.4f} {n * 1e3:>9.4f} {n / o:>7.3f} | {cell(p and p * 1e3, '>9.4f'):>9} "
              f"{cell(ro, '>9.2f'):>9} {cell(rn, '>9.2f'):>9} | {verdict:<12} | {spread * 100:.0f} %")
sys.exit(1 if missed else 0)
PY
exit "$status"
