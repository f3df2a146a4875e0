#!/usr/bin/env python3
"""Per-cell medians over several saved bench_embedding outputs (a noisy machine: one run's cells
move 10-80 %, the median of five moves far less).

    python3 scripts/bench_median.py run1.txt run2.txt ... [--markdown]

Each file is the whole output of one `bench_embedding [--busy]` (or scripts/bench.sh) run. For
every workload it takes, per run, PyTorch's and hitch's ms per step at 1 and 2 threads, the
PyTorch/hitch ratio and the ceiling fraction, and prints the median over the runs of each (the
ratio is the median of the per-run ratios: both sides of a ratio ran minutes apart, not hours).
With --busy runs it prints a second table: the busy runs' hitch times at 1 and 2 threads, the
median of the per-run 2t/1t, and the idle 2t/1t speed-up beside it. Targets are read from the
runs' own verdict column. Standard library only.
"""
import re
import statistics
import sys


def parse(path):
    """{'idle'|'busy': {'hitch': {(t, name): ms}, 'ceil': {(t, name): pct}, 'ratio': {name: line}}}."""
    out = {"idle": {"hitch": {}, "ceil": {}, "torch": {}, "target": {}},
           "busy": {"hitch": {}, "ceil": {}, "torch": {}, "target": {}}}
    part, threads, in_ratio = "idle", 1, False
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("==== BUSY"):
            part, in_ratio = "busy", False
            continue
        m = re.match(r"== (\d+) threads? ==", line)
        if m:
            threads, in_ratio = int(m.group(1)), False
            continue
        if line.startswith("== PyTorch / hitch"):
            in_ratio = True
            continue
        if line.startswith("== checks"):
            in_ratio = False
            continue
        cells = line.split("|")
        if in_ratio and len(cells) >= 4 and "/" in cells[0] and "torch" not in cells[1]:
            name = cells[0].strip()
            for t, cell in zip((1, 2), cells[1:3]):
                v = cell.split()
                if len(v) == 3 and v[0] != "n/a":
                    out[part]["torch"][(t, name)] = float(v[0])
            out[part]["target"][name] = cells[-1].strip()
            continue
        v = line.split()
        if len(v) >= 4 and "/" in v[0] and re.match(r"^[\d.]+$", v[1]) and not in_ratio:
            out[part]["hitch"][(threads, v[0])] = float(v[1])
            if v[-1].endswith("%"):
                out[part]["ceil"][(threads, v[0])] = float(v[-1][:-1])
    return out


def med(values):
    return statistics.median(values) if values else None


def fmt(v, spec="{:.3f}"):
    return "-" if v is None else spec.format(v)


def targets_of(verdict):
    """'1t >= 4: met, 2t >= 5: MISSED' -> {1: 4.0, 2: 5.0}."""
    return {int(t): float(x) for t, x in re.findall(r"(\d)t >= ([\d.]+)", verdict)}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md = "--markdown" in sys.argv
    if not args:
        sys.exit(__doc__)
    runs = [parse(p) for p in args]
    names = []
    for r in runs:
        for (_, n) in r["idle"]["hitch"]:
            if n not in names:
                names.append(n)
    sep = " | " if md else "  "
    print(f"median over {len(runs)} runs ({', '.join(args)})")
    head = ["workload", "torch 1t", "hitch 1t", "ratio 1t", "torch 2t", "hitch 2t", "ratio 2t", "target",
            "ceil 1t", "ceil 2t"]
    print(("| " if md else "") + sep.join(head) + (" |" if md else ""))
    if md:
        print("|" + "---|" * len(head))
    for n in names:
        row = [n]
        verdicts = []
        target = {}
        for r in runs:
            target = target or targets_of(r["idle"]["target"].get(n, ""))
        for t in (1, 2):
            tor = med([r["idle"]["torch"][(t, n)] for r in runs if (t, n) in r["idle"]["torch"]])
            hit = med([r["idle"]["hitch"][(t, n)] for r in runs if (t, n) in r["idle"]["hitch"]])
            ratio = med([r["idle"]["torch"][(t, n)] / r["idle"]["hitch"][(t, n)] for r in runs
                         if (t, n) in r["idle"]["torch"] and (t, n) in r["idle"]["hitch"]])
            row += [fmt(tor), fmt(hit), fmt(ratio, "{:.2f}")]
            if t in target and ratio is not None:
                verdicts.append(f"{t}t >= {target[t]:g}: {'met' if ratio >= target[t] else 'MISSED'}")
        row.append(", ".join(verdicts) or "-")
        for t in (1, 2):
            row.append(fmt(med([r["idle"]["ceil"][(t, n)] for r in runs if (t, n) in r["idle"]["ceil"]]), "{:.0f}%"))
        print(("| " if md else "") + sep.join(row) + (" |" if md else ""))
    busy = [r for r in runs if r["busy"]["hitch"]]
    if not busy:
        return
    print(f"\nbusy: beside a busy-loop neighbour, median over {len(busy)} runs")
    head = ["workload", "busy 1t", "busy 2t", "busy 2t/1t", "<= 1.05", "idle 2t/1t"]
    print(("| " if md else "") + sep.join(head) + (" |" if md else ""))
    if md:
        print("|" + "---|" * len(head))
    for n in names:
        h1 = med([r["busy"]["hitch"][(1, n)] for r in busy if (1, n) in r["busy"]["hitch"]])
        h2 = med([r["busy"]["hitch"][(2, n)] for r in busy if (2, n) in r["busy"]["hitch"]])
        q = med([r["busy"]["hitch"][(2, n)] / r["busy"]["hitch"][(1, n)] for r in busy
                 if (1, n) in r["busy"]["hitch"] and (2, n) in r["busy"]["hitch"]])
        idle = med([r["idle"]["hitch"][(2, n)] / r["idle"]["hitch"][(1, n)] for r in runs
                    if (1, n) in r["idle"]["hitch"] and (2, n) in r["idle"]["hitch"]])
        ok = "-" if q is None else ("met" if q <= 1.05 else "MISSED")
        row = [n, fmt(h1), fmt(h2), fmt(q, "{:.2f}"), ok, fmt(idle, "{:.2f}")]
        print(("| " if md else "") + sep.join(row) + (" |" if md else ""))


if __name__ == "__main__":
    main()
