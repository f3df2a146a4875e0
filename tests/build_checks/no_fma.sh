#!/usr/bin/env bash
# Fails when the hitch library contains an FMA instruction (issue 12, finding 3).
#   no_fma.sh <objdump> <library file>
# hitch promises the same bits at any thread count and on any vector width (docs/reliability.md,
# "Determinism"); that holds only if no a*b+c is contracted into a fused multiply-add, whose single
# rounding differs from a multiply then an add. The library is built with -ffp-contract=off; this
# disassembles it (every target_clones clone included) and lists each function that still has a
# vfmadd / vfmsub / vfnmadd / vfnmsub (FMA3, AVX-512 and AMD FMA4 forms). OpenBLAS is a separate
# shared library and is not inspected. Exit 77 (ctest: skipped) without objdump or off x86-64.
set -euo pipefail
objdump="${1:-}"
lib="${2:?usage: no_fma.sh <objdump> <library>}"
if [ -z "$objdump" ] || ! command -v "$objdump" >/dev/null 2>&1; then
  echo "skipped: no objdump (binutils) found"
  exit 77
fi
case "$(uname -m)" in
  x86_64 | amd64) ;;
  *) echo "skipped: the FMA mnemonics checked are x86-64's, this is $(uname -m)"; exit 77 ;;
esac
listing="$(mktemp)"
trap 'rm -f "$listing"' EXIT
"$objdump" -d --no-show-raw-insn "$lib" >"$listing"
# Function headers look like "0000000000001230 <name>:"; report name and count per function.
awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $2; functions++; if (fn ~ /\.avx512f>:$/) avx512++; if (fn ~ /\.avx2>:$/) avx2++ }
  /\tv?fn?m(add|sub)[a-z0-9]*[ \t]/ { if (fn != "") hits[fn]++; total++ }
  END {
    for (f in hits) printf "FMA: %d in %s\n", hits[f], f
    printf "%d functions disassembled (%d AVX-512 and %d AVX2 clones), %d FMA instructions\n",
           functions, avx512, avx2, total
    exit total > 0 ? 1 : 0
  }' "$listing"
