"""Engine overhead: conv2d forward+backward and a small-CNN training step against bare GEMMs.

For each case the same run times (a) the engine and (b) exactly the GEMMs that the engine's
im2col formulation performs (specs/conv.md), called directly through NumPy on prepared
operands, and prints the ratio (a) / (b). Target for conv2d forward+backward: <= 1.5.

    python benchmarks/engine.py [--repeats 7] [--dtype float32] [--default-allocator]

Set OPENBLAS_NUM_THREADS=1 to compare single-threaded GEMMs with the single-threaded copies.
"""

from __future__ import annotations

import argparse

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor, nn
from lance_ref.allocator import keep_freed_memory
from lance_ref.functional.conv import conv_geometry, transposed_geometry
from lance_ref.nn import build_model
from timing import run_times

CONV_SHAPES = [  # (batch, in_channels, out_channels, size, kernel, stride, padding)
    (64, 32, 32, 16, 3, 1, 1),
    (64, 32, 64, 16, 3, 1, 1),
    (64, 64, 64, 16, 3, 1, 1),
    (64, 64, 64, 8, 3, 1, 1),
    (64, 64, 128, 16, 3, 2, 1),
    (128, 16, 32, 28, 3, 1, 1),
]


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` runs after one warm-up (the least disturbed measurement)."""
    return min(run_times(fn, repeats))


def conv_gemms(x_shape, weight_shape, stride, padding, need_input_grad=True):
    """The (G, M, K) @ (G, K, P) products of the engine's conv2d forward and backward."""
    (n, c, _, _), (o, cg, kh, kw) = x_shape, weight_shape
    groups = c // cg
    geometry = conv_geometry(x_shape, (kh, kw), (stride, stride), (padding, padding), (1, 1), groups)
    out_rows = n * geometry["out_hw"][0] * geometry["out_hw"][1]
    taps, og = kh * kw, o // groups
    products = [((groups, out_rows, taps * cg), (groups, taps * cg, og))]  # Y = cols W^T
    if transposed_geometry(geometry, (n, o, *geometry["out_hw"])) is not None:
        in_rows = n * x_shape[2] * x_shape[3]
        products.append(((groups, cg, in_rows), (groups, in_rows, taps * og)))  # dW = X^T cols(dY)
        if need_input_grad:
            products.append(((groups, in_rows, taps * og), (groups, taps * og, cg)))  # dx = cols(dY) W~^T
    else:
        products.append(((groups, og, out_rows), (groups, out_rows, taps * cg)))  # dW = dY^T cols
        if need_input_grad:
            products.append(((groups, out_rows, og), (groups, og, taps * cg)))  # dcols = dY W
    return products


def time_gemms(products, dtype, repeats):
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal(a).astype(dtype), rng.standard_normal(b).astype(dtype)) for a, b in products]
    flops = sum(2 * np.prod(a) * b[-1] for a, b in products)

    def run():
        for a, b in operands:
            a @ b

    return best_time(run, repeats), flops


def conv_case(shape, dtype, repeats):
    n, c, o, size, k, s, p = shape
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((n, c, size, size)).astype(dtype), requires_grad=True)
    w = Tensor(rng.standard_normal((o, c, k, k)).astype(dtype) * 0.1, requires_grad=True)
    grad = F.conv2d(x, w, stride=s, padding=p).data.copy()

    def engine():
        x.grad = w.grad = None
        F.conv2d(x, w, stride=s, padding=p).backward(grad)

    gemms, flops = time_gemms(conv_gemms(x.shape, w.shape, s, p), dtype, repeats)
    return best_time(engine, repeats), gemms, flops


def model_step_case(dtype, repeats, batch=64):
    """One forward+backward of small-cnn against the GEMMs of its convolutions and classifier."""
    lance_ref.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=28, dtype=dtype)
    x = Tensor(np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(dtype))
    y = np.arange(batch) % 10

    def step():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    products, h = [], x
    with lance_ref.no_grad():
        for layer in model.features:
            if isinstance(layer, nn.Conv2d):
                products += conv_gemms(h.shape, layer.weight.shape, layer.stride[0], layer.padding[0], need_input_grad=bool(products))
            h = layer(h)
    features, classes = model.classifier.weight.shape[1], model.classifier.weight.shape[0]
    products += [((1, batch, features), (1, features, classes)), ((1, classes, batch), (1, batch, features)), ((1, batch, classes), (1, classes, features))]
    gemms, flops = time_gemms(products, dtype, repeats)
    return best_time(step, repeats), gemms, flops


def row(label, engine, gemms, flops):
    print(f"{label:<28}{engine * 1e3:>11.2f}{gemms * 1e3:>11.2f}{engine / gemms:>8.2f}{flops / gemms / 1e9:>14.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--default-allocator", action="store_true", help="skip lance_ref.allocator.keep_freed_memory()")
    args = parser.parse_args(argv)
    if not args.default_allocator:
        keep_freed_memory()
    dtype = np.dtype(args.dtype)
    print(f"{dtype}, best of {args.repeats}; ratio = engine time / time of the same GEMMs in NumPy")
    print(f"{'conv2d fwd+bwd N,C,O,HW,k,s,p':<28}{'engine ms':>11}{'GEMMs ms':>11}{'ratio':>8}{'GEMM GFLOP/s':>14}")
    ratios = []
    for shape in CONV_SHAPES:
        engine, gemms, flops = conv_case(shape, dtype, args.repeats)
        ratios.append(engine / gemms)
        row(",".join(map(str, shape)), engine, gemms, flops)
    print(f"{'median conv2d ratio':<28}{'':>22}{np.median(ratios):>8.2f}")
    row("small-cnn step, batch 64", *model_step_case(dtype, args.repeats))


if __name__ == "__main__":
    main()
