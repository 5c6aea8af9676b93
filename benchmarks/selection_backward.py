"""Backward time of budgeted neuron selection against full backprop, side by side.

The same model (same weights) and the same batch of real digits; every conv is fine-tuned (as in
`lance-ref selection-sweep`). Configurations, stepped in turn and interleaved, median of the
`loss.backward()` time:

- `full`: the engine's conv2d (plain backprop);
- `all channels`: every channel selected, through the selective conv's partial route (so the
  route's own cost is seen apart from the budget's saving);
- each budget: the channels `random` (seeded) or `su` selects.

    python benchmarks/selection_backward.py [--model small-cnn] [--budgets 0.05,0.1,0.2,0.3] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor
from lance_ref.allocator import keep_freed_memory
from lance_ref.data import load_mnist5k, normalize
from lance_ref.nn import build_model, fine_tune_last
from lance_ref.selection import NeuronSelector, SelectiveConv2d


def backward_of(model, x, y):
    """A closure timing one forward (untimed) and backward (timed) of `model` on (x, y)."""
    def backward():
        model.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), y)
        start = time.perf_counter()
        loss.backward()
        return time.perf_counter() - start

    return backward


def configured(name, state, last_n, policy=None, budget=None):
    """(model, conv parameters updated) with its last `last_n` convs fine-tuned: plain (policy
    None, all updated) or selective."""
    model = build_model(name, num_classes=10, in_channels=1, image_size=28)
    model.load_state_dict(state)
    wrap = (lambda conv: conv) if policy is None else SelectiveConv2d
    fine_tune_last(model, last_n, wrap, lambda linear: linear)
    if policy is None:
        return model, "all"
    return model, NeuronSelector(model, policy, budget, rng=np.random.default_rng(0)).before_epoch(1)["updated_parameters"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--last-n", type=int, default=3)
    parser.add_argument("--budgets", default="0.05,0.1,0.2,0.3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    keep_freed_memory()
    lance_ref.manual_seed(0)
    state = build_model(args.model, num_classes=10, in_channels=1, image_size=28).state_dict()
    data = load_mnist5k()
    x, y = normalize(data.images[: args.batch], data.mean, data.std), data.labels[: args.batch]
    configurations = {"full": configured(args.model, state, args.last_n), "all channels": configured(args.model, state, args.last_n, "full")}
    for budget in (float(b) for b in args.budgets.split(",")):
        for policy in ("random", "su"):
            configurations[f"{policy} {budget:g}"] = configured(args.model, state, args.last_n, policy, budget)
    backwards = {label: backward_of(model, x, y) for label, (model, _) in configurations.items()}
    times = {label: [] for label in backwards}
    for _ in range(args.repeats + 1):  # the first round warms up
        for label, backward in backwards.items():
            times[label].append(backward())
    median = {label: float(np.median(t[1:])) for label, t in times.items()}
    print(f"{args.model}, every conv of the last {args.last_n} fine-tuned; batch {args.batch}; median of {args.repeats}")
    print(f"  {'configuration':<14}{'updated':>9}{'backward ms':>13}{'full / this':>13}")
    for label, (_, updated) in configurations.items():
        print(f"  {label:<14}{updated:>9}{median[label] * 1e3:>13.2f}{median['full'] / median[label]:>12.2f}x")


if __name__ == "__main__":
    main()
