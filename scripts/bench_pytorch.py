#!/usr/bin/python3
"""PyTorch side of examples/bench_embedding.cpp: the same workloads, same sizes, same loss.

Run with Debian's interpreter and python3-torch (1.13):
    /usr/bin/python3 scripts/bench_pytorch.py --threads 1 --workloads A/adam-dense-tied,B/fwd-sum
Prints one line per workload: RESULT <name> <median seconds per step>.
"B-zipf/..." and "C-zipf/..." workloads train on Zipf-distributed ids that bench_embedding writes
to --ids-dir (<dir>/B-zipf.ids, <dir>/C-zipf.ids: int64, 4 batches of b single ids then b x l bag
ids), so both sides train on the same ids.
"...-inbwd-..." rows (hitch's optimizer applied in backward, optim::InBackward) run PyTorch's
ordinary loop: the same training, the usual way a PyTorch user writes it.
A step is zero_grad, forward, backward, optimizer step (forward-only workloads: the bag forward
under no_grad). Batches are generated before timing; two warm-up steps are not timed.
"""
import argparse
import statistics
import time

import numpy
import torch

FULL = {"A": (1000, 32, 64, 8), "B": (100000, 64, 1024, 20), "C": (2000000, 64, 4096, 40), "LM": (10000, 128, 512, 1)}
SMOKE = {"A": (100, 8, 4, 3), "B": (1000, 16, 32, 5), "C": (5000, 16, 64, 6), "LM": (200, 16, 32, 1)}


def parse(name):
    """'B/sgd-sparse-tied' -> size, forward_only, mode, tied, sparse, optimizer ('B-zipf/...': size B)."""
    size, what = name.split("/")
    size = size.split("-")[0]
    if what.startswith("fwd-"):
        return size, True, what[4:], False, False, None
    if size in ("A", "LM"):
        return size, False, "mean", True, False, "adam"
    tied = what.endswith("-tied")
    opt = {"sgd": "sgd", "sparseadam": "sparse_adam", "adam": "adam"}[what.split("-")[0]]
    return size, False, "sum", tied, "sparse" in what, opt


def run(name, smoke, max_steps, min_seconds, ids_dir):
    size, forward_only, mode, tied, sparse, opt_name = parse(name)
    n, d, b, l = (SMOKE if smoke else FULL)[size]
    g = torch.Generator().manual_seed(1)
    # The tie as a PyTorch user writes it: two modules, one Parameter.
    emb = torch.nn.Embedding(n, d, sparse=sparse, _weight=torch.empty(n, d).uniform_(-0.05, 0.05, generator=g))
    bag = torch.nn.EmbeddingBag(n, d, mode=mode, sparse=sparse, _weight=emb.weight)
    bag.weight = emb.weight
    weight = emb.weight
    batches = [(torch.randint(0, n, (b,), generator=g), torch.randint(0, n, (b, l), generator=g)) for _ in range(4)]
    if name.split("/")[0].endswith("-zipf"):
        if ids_dir is None:
            raise SystemExit(f"bench_pytorch.py: {name} needs --ids-dir (bench_embedding passes it)")
        ids = torch.from_numpy(numpy.fromfile(f"{ids_dir}/{size}-zipf.ids", dtype="<i8"))
        per = b + b * l
        if ids.numel() != 4 * per:
            raise SystemExit(f"bench_pytorch.py: {ids_dir}/{size}-zipf.ids has {ids.numel()} ids, expected {4 * per}")
        batches = [(ids[k * per:k * per + b].clone(), ids[k * per + b:(k + 1) * per].reshape(b, l).clone())
                   for k in range(4)]
    u = torch.empty(b, d).uniform_(-1.0, 1.0, generator=g)
    opt = None
    if opt_name == "sgd":
        opt = torch.optim.SGD([weight], lr=0.01)
    elif opt_name == "sparse_adam":
        opt = torch.optim.SparseAdam([weight], lr=0.001)
    elif opt_name == "adam":
        opt = torch.optim.Adam([weight], lr=0.001)

    def step(k):
        singles, bags = batches[k % 4]
        if size == "LM":
            # The tied language-model step: lookup, output projection through the same weight
            # (F.linear(h, emb.weight), as a head whose weight is emb.weight), cross-entropy, Adam.
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(emb(singles), weight), bags[:, 0])
            loss.backward()
            opt.step()
            return
        if forward_only:
            with torch.no_grad():
                bag(bags)
            return
        opt.zero_grad()
        pooled = bag(bags)
        e = emb(singles) if tied else u
        loss = ((e * pooled).sum(1) ** 2).mean()
        loss.backward()
        opt.step()

    for k in range(2):
        step(k)
    times = []
    start = time.perf_counter()
    for k in range(max_steps):
        t0 = time.perf_counter()
        step(k)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if k >= 4 and t1 - start > min_seconds:
            break
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workloads", required=True, help="comma-separated names, as bench_embedding prints them")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--ids-dir", help="where bench_embedding wrote the Zipf workloads' ids")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    max_steps, min_seconds = (2, 0.0) if args.smoke else (args.max_steps, args.min_seconds)
    for name in args.workloads.split(","):
        print(f"RESULT {name} {run(name, args.smoke, max_steps, min_seconds, args.ids_dir):.9f}", flush=True)


if __name__ == "__main__":
    main()
