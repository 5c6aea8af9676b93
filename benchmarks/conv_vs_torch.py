"""Each distinct 3x3 convolution of a zoo model, lance-ref's engine against torch eager, per pass.

For every distinct (input shape, weight shape, stride) of the model's 3x3 convs at the given
batch, float32, one thread: the median time of the forward alone, and of forward + backward with
only W or only x requiring a gradient, minus the forward (so the weight- and input-gradient
passes), on the active lance-ref backend and, when it is importable, torch. GFLOP/s count the
pass's 2 N H' W' O C kh kw multiply-adds. Run with one thread on both sides:

    OPENBLAS_NUM_THREADS=1 LANCE_CORE_THREADS=1 OMP_NUM_THREADS=1 \
        python benchmarks/conv_vs_torch.py [--model resnet18-reduced] [--batch 64] [--repeats 7]
"""

from __future__ import annotations

import argparse

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor
from lance_ref.allocator import keep_freed_memory
from lance_ref.nn import Conv2d, build_model, recording
from timing import run_times
from vs_torch import SHAPES, optional_torch

PASSES = ("forward", "weight grad", "input grad")


def distinct_convs(model, x) -> list:
    """(input shape, weight, stride, padding) of each distinct 3x3 conv that `model` runs on `x`
    (distinct in input shape, weight shape, stride and padding)."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv2d) and m.weight.shape[2:] == (3, 3)}
    with lance_ref.no_grad(), recording(convs) as inputs:
        model(Tensor(x))
    found = {}
    for name, seen in inputs.items():
        conv = convs[name]
        found.setdefault((seen[0].shape, conv.weight.shape, conv.stride, conv.padding), (seen[0].shape, conv.weight.data, conv.stride, conv.padding))
    return list(found.values())


def pass_times(run, x, weight, grad, repeats) -> list:
    """Median seconds of the forward, the weight-gradient and the input-gradient pass, `run(x,
    weight, grad, needs)` running the forward alone (needs None) or with the backward of `grad`
    for the input that `needs` names ("w" or "x")."""

    def median(needs):
        return float(np.median(run_times(lambda: run(x, weight, grad, needs), repeats)))

    seconds = median(None)
    return [seconds, median("w") - seconds, median("x") - seconds]


def lance_conv(stride, padding):
    def run(x, weight, grad, needs):
        xt, wt = Tensor(x, requires_grad=needs == "x"), Tensor(weight, requires_grad=needs == "w")
        if needs is None:
            with lance_ref.no_grad():
                return F.conv2d(xt, wt, None, stride, padding)
        F.conv2d(xt, wt, None, stride, padding).backward(grad)

    return run


def torch_conv(torch, stride, padding):
    def run(x, weight, grad, needs):
        xt = torch.from_numpy(x).requires_grad_(needs == "x")
        wt = torch.from_numpy(weight).requires_grad_(needs == "w")
        if needs is None:
            with torch.no_grad():
                return torch.nn.functional.conv2d(xt, wt, None, stride, padding)
        torch.nn.functional.conv2d(xt, wt, None, stride, padding).backward(torch.from_numpy(grad))

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-reduced")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch = optional_torch(1)
    channels, size = SHAPES.get(args.model, (3, 32))
    rng = np.random.default_rng(0)
    lance_ref.manual_seed(0)
    model = build_model(args.model, 10, channels, size)
    x0 = rng.standard_normal((args.batch, channels, size, size), dtype=np.float32)
    print(f"{args.model}, batch {args.batch}, float32, backend {lance_ref.kernels.backend()}: ms (GFLOP/s)")
    print(f"{'input':<18} {'weight':<17} {'s':>1} " + " ".join(f"{p + ' lance / torch':>30}" for p in PASSES))
    totals = np.zeros((2, 3))
    for shape, weight, stride, padding in distinct_convs(model, x0):
        x = rng.standard_normal(shape, dtype=np.float32)
        with lance_ref.no_grad():
            grad = np.ones_like(F.conv2d(Tensor(x), Tensor(weight), None, stride, padding).data)
        flops = 2 * grad.size * np.prod(weight.shape[1:])
        lance = pass_times(lance_conv(stride, padding), x, weight, grad, args.repeats)
        theirs = pass_times(torch_conv(torch, stride, padding), x, weight, grad, args.repeats) if torch else [np.nan] * 3
        totals += [lance, theirs]
        cells = [f"{1e3 * a:6.2f} ({flops / a / 1e9:3.0f}) / {1e3 * b:6.2f} ({flops / b / 1e9:3.0f})" for a, b in zip(lance, theirs)]
        print(f"{str(shape):<18} {str(weight.shape):<17} {stride[0]:>1} " + " ".join(f"{c:>30}" for c in cells), flush=True)
    ratios = ", ".join(f"{p} {a / b:.2f}" for p, a, b in zip(PASSES, *totals))
    print(f"sum over the distinct convs, lance / torch: {ratios}")


if __name__ == "__main__":
    main()
