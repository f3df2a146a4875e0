#!/usr/bin/env bash
# ctest example_recommend_dist: recommend_dist under mpirun prints the table recommend prints.
#
#   recommend_dist.sh RECOMMEND RECOMMEND_DIST WORKDIR MPIRUN... -- FLAGS...
#
# Runs `RECOMMEND FLAGS` (one process) and `MPIRUN... RECOMMEND_DIST FLAGS` (MPIRUN... is the
# mpirun command with its -np), takes the rows of each table (from the "run" header to
# "random"), drops the time column and compares them field by field: text equal, numbers equal
# as printed or, where float rounding in another summation order lands on the other side of a
# rounding boundary, one unit of the last printed digit apart. Every such near-miss is listed.
# Fails when the programs fail, when a table is missing or has other rows, or on any other
# difference. EXPECT_LINE (environment, optional): an extended regex some line of the MPI
# program's output must match (recommend_sharded: "^sharded: ").
set -euo pipefail
recommend=$1 recommend_dist=$2 work=$3
shift 3
mpirun=()
while [[ $# -gt 0 && $1 != -- ]]; do mpirun+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
flags=("$@")
mkdir -p "$work"

"$recommend" "${flags[@]}" --out "$work/single" >"$work/single.txt" 2>"$work/single.err" ||
  { echo "recommend failed:"; cat "$work/single.err"; exit 1; }
"${mpirun[@]}" "$recommend_dist" "${flags[@]}" --out "$work/dist" >"$work/dist.txt" 2>"$work/dist.err" ||
  { echo "recommend_dist failed:"; cat "$work/dist.txt" "$work/dist.err"; exit 1; }

# The table rows without the time column (a run row ends with "<seconds>s").
table() { awk '/^run /{on=1} on{ if ($NF ~ /s$/ && $NF != "recall@10") $NF=""; print } /^random/{on=0}' "$1"; }
table "$work/single.txt" >"$work/single.table"
table "$work/dist.txt" >"$work/dist.table"
echo "== recommend"; cat "$work/single.txt"
echo "== mpirun ... recommend_dist"; cat "$work/dist.txt"

rows=$(wc -l <"$work/single.table")
if [[ $rows -lt 8 ]]; then echo "FAIL: recommend printed no table ($rows rows)"; exit 1; fi
if [[ $(wc -l <"$work/dist.table") -ne $rows ]]; then echo "FAIL: the tables have different rows"; exit 1; fi
if ! grep -q "^data-parallel: " "$work/dist.txt"; then echo "FAIL: recommend_dist did not say it ran data-parallel"; exit 1; fi
if [[ -n ${EXPECT_LINE:-} ]] && ! grep -Eq "$EXPECT_LINE" "$work/dist.txt"; then
  echo "FAIL: $recommend_dist printed no line matching $EXPECT_LINE"; exit 1
fi

# Field by field. A number printed with k decimals may differ by at most 10^-k (plus slack for
# the decimal conversion); anything else must be the same text.
paste -d '\n' "$work/single.table" "$work/dist.table" | awk '
  NR % 2 == 1 { a = $0; next }
  {
    b = $0; na = split(a, fa, / +/); nb = split(b, fb, / +/)
    if (na != nb) { print "FAIL: row differs:\n  " a "\n  " b; bad = 1; next }
    for (i = 1; i <= na; ++i) {
      if (fa[i] == fb[i]) continue
      if (fa[i] ~ /^-?[0-9]+\.[0-9]+$/ && fb[i] ~ /^-?[0-9]+\.[0-9]+$/) {
        split(fa[i], parts, "."); unit = 10 ^ -length(parts[2])
        diff = fa[i] - fb[i]; if (diff < 0) diff = -diff
        if (diff <= unit * 1.001) { print "near-miss (one unit of the last digit): " fa[i] " vs " fb[i] " in: " a; continue }
      }
      print "FAIL: " fa[i] " vs " fb[i] " in:\n  " a "\n  " b; bad = 1
    }
  }
  END { exit bad }'
echo "tables agree ($rows rows)"
