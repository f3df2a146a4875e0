#!/usr/bin/env python3
"""The alias_pitfall table, built with PyTorch (for readers who want to check hitch's numbers).

The seed recipe's `nn.EmbeddingBag.from_pretrained(emb.weight, freeze=False)` (a second Parameter
over the same storage) against true tying (`bag.weight = emb.weight`), trained side by side for
20 steps under SGD, SGD+momentum, SGD+weight decay, Adam, AdamW and Adagrad. The model is the
one of examples/alias_pitfall.cpp (REFERENCE 2.9's measurement setup).

With --inputs (written by `alias_pitfall --dump-inputs FILE`) both variants start from hitch's
initial weights and see hitch's batches, so the two tables should agree to float rounding.
Without it the weights and batches come from torch.manual_seed(--seed): the same pattern, other
numbers.

Run with Debian's PyTorch (python3-torch), not a pyenv python:
    ./examples/alias_pitfall --dump-inputs inputs.json
    /usr/bin/python3 ../scripts/alias_pitfall_pytorch.py --inputs inputs.json
Not needed by the build or CI.
"""
import argparse
import csv
import json
import math

import torch
import torch.nn as nn

ROWS, DIM, BATCH, SEQ_LEN, BAG_LEN = 10, 4, 4, 3, 8

SETTINGS = [
    ("SGD lr 0.005", lambda ps: torch.optim.SGD(ps, lr=0.005)),
    ("SGD+momentum 0.9 lr 0.002", lambda ps: torch.optim.SGD(ps, lr=0.002, momentum=0.9)),
    ("SGD+weight_decay 0.1 lr 0.005", lambda ps: torch.optim.SGD(ps, lr=0.005, weight_decay=0.1)),
    ("Adam lr 0.05", lambda ps: torch.optim.Adam(ps, lr=0.05)),
    ("AdamW lr 0.05 wd 0.01", lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=1e-2)),
    ("Adagrad lr 0.1", lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
]


def load_inputs(path):
    with open(path) as f:
        d = json.load(f)
    return {
        "table": torch.tensor(d["table"], dtype=torch.float32).reshape(d["rows"], d["dim"]),
        "linear_weight": torch.tensor(d["linear_weight"], dtype=torch.float32).reshape(1, d["dim"]),
        "linear_bias": torch.tensor(d["linear_bias"], dtype=torch.float32),
        "tokens": [torch.tensor(t).reshape(d["batch"], d["seq_len"]) for t in d["tokens"]],
        "bag_input": [torch.tensor(b) for b in d["bag_input"]],
        "offsets": torch.tensor(d["offsets"]),
    }


def make_inputs(seed, steps):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(DIM, 1)
    return {
        "table": torch.randn(ROWS, DIM, generator=g),
        "linear_weight": linear.weight.detach().clone(),
        "linear_bias": linear.bias.detach().clone(),
        "tokens": [torch.randint(0, ROWS, (BATCH, SEQ_LEN), generator=g) for _ in range(steps)],
        "bag_input": [torch.randint(0, ROWS, (BAG_LEN,), generator=g) for _ in range(steps)],
        "offsets": torch.tensor([0, 3, 5, 5]),
    }


def build(inputs, pitfall):
    emb = nn.Embedding(ROWS, DIM)
    with torch.no_grad():
        emb.weight.copy_(inputs["table"])
    if pitfall:  # the seed recipe: a second Parameter over emb.weight's storage
        bag = nn.EmbeddingBag.from_pretrained(emb.weight, freeze=False, mode="sum")
    else:  # true tying: the same Parameter object
        bag = nn.EmbeddingBag(ROWS, DIM, mode="sum")
        bag.weight = emb.weight
    linear = nn.Linear(DIM, 1)
    with torch.no_grad():
        linear.weight.copy_(inputs["linear_weight"])
        linear.bias.copy_(inputs["linear_bias"])
    return nn.ModuleDict({"emb": emb, "bag": bag, "linear": linear})


def train(inputs, make_opt, pitfall):
    model = build(inputs, pitfall)
    params = list(model.parameters())
    opt = make_opt(params)
    losses, tables = [], []
    for tokens, bag_input in zip(inputs["tokens"], inputs["bag_input"]):
        h = model["emb"](tokens).sum(1) + model["bag"](bag_input, inputs["offsets"])
        loss = ((model["linear"](h) / 10 - 1) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
        tables.append(model["emb"].weight.detach().clone())
    # Parameters whose state holds a buffer (plain SGD keeps momentum_buffer = None: no buffer).
    states = sum(1 for s in opt.state.values() if any(torch.is_tensor(v) for k, v in s.items() if k != "step"))
    return losses, tables, len(params), states


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", help="JSON from `alias_pitfall --dump-inputs FILE` (identical weights and batches)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed when --inputs is not given")
    ap.add_argument("--steps", type=int, default=20, help="steps when --inputs is not given")
    ap.add_argument("--hitch-csv", help="alias_pitfall's --csv output (same --inputs): compare the losses step by step")
    args = ap.parse_args()
    inputs = load_inputs(args.inputs) if args.inputs else make_inputs(args.seed, args.steps)
    steps = len(inputs["tokens"])

    print(f"PyTorch {torch.__version__}: tied (bag.weight = emb.weight) vs from_pretrained(emb.weight, freeze=False),")
    print(f"{steps} steps, inputs {'from ' + args.inputs if args.inputs else 'from torch seed %d' % args.seed}.\n")
    print("| optimizer | parameters / states, tied | parameters / states, pitfall | max abs dw | rel. L2 dw | "
          "final loss, tied | final loss, pitfall |")
    print("|---|---|---|---|---|---|---|")
    worst = []
    hitch = {}
    if args.hitch_csv:
        with open(args.hitch_csv) as f:
            for row in csv.DictReader(f):
                hitch.setdefault(row["series"], []).append(float(row["loss"]))
    for name, make_opt in SETTINGS:
        tl, tt, tp, ts = train(inputs, make_opt, False)
        pl, pt, pp, ps = train(inputs, make_opt, True)
        for tag, losses in (("tied", tl), ("pitfall", pl)):
            if f"{name} ({tag})" in hitch:
                worst.append(max(abs(a - b) for a, b in zip(losses, hitch[f"{name} ({tag})"])))
        diff = (tt[-1] - pt[-1]).abs().max().item()
        rel = math.sqrt(((tt[-1] - pt[-1]) ** 2).sum().item() / (tt[-1] ** 2).sum().item())
        print(f"| {name} | {tp} / {ts} | {pp} / {ps} | {diff:.3g} | {rel:.3g} | {tl[-1]:.4f} | {pl[-1]:.4f} |")
    if args.hitch_csv:
        print(f"\nlargest |loss_pytorch - loss_hitch| over every step of the {len(worst)} runs: {max(worst):.3g}")


if __name__ == "__main__":
    main()
