"""Engine overhead: conv2d forward+backward and one small-CNN step against the bare GEMMs.

For every shape the same run times (a) the engine and (b) exactly the GEMMs the engine's
im2col formulation performs, called directly on prepared NumPy operands, and prints the
ratio (a) / (b). Target for conv2d forward+backward: ratio <= 1.5.

    python benchmarks/engine.py [--repeats 7] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor
from lance_ref.functional.windows import output_size

CONV_SHAPES = [  # (batch, in_channels, out_channels, size, kernel, stride, padding)
    (64, 32, 32, 16, 3, 1, 1),
    (64, 32, 64, 16, 3, 1, 1),
    (64, 64, 64, 16, 3, 1, 1),
    (64, 64, 64, 8, 3, 1, 1),
    (128, 16, 32, 28, 3, 1, 1),
]


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` runs after one warm-up (the least disturbed measurement)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def conv_case(shape, dtype, repeats):
    n, c, o, size, k, s, p = shape
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((n, c, size, size)).astype(dtype), requires_grad=True)
    w = Tensor(rng.standard_normal((o, c, k, k)).astype(dtype) * 0.1, requires_grad=True)
    out = output_size(size, k, s, p, 1)
    grad = rng.standard_normal((n, o, out, out)).astype(dtype)

    def engine():
        x.grad = w.grad = None
        F.conv2d(x, w, stride=s, padding=p).backward(grad)

    rows, depth = n * out * out, c * k * k
    cols = rng.standard_normal((rows, depth)).astype(dtype)
    w_mat = w.data.reshape(o, depth)
    g_rows = rng.standard_normal((rows, o)).astype(dtype)

    def gemms():
        cols @ w_mat.T  # forward
        g_rows @ w_mat  # input gradient columns
        g_rows.T @ cols  # weight gradient

    flops = 3 * 2 * rows * depth * o
    return best_time(engine, repeats), best_time(gemms, repeats), flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    print(f"conv2d forward+backward, {dtype}, best of {args.repeats} (engine vs the same GEMMs in NumPy)")
    print(f"{'N,C,O,HxW,k,s,p':<26}{'engine ms':>11}{'GEMMs ms':>11}{'ratio':>8}{'GEMM GFLOP/s':>14}")
    for shape in CONV_SHAPES:
        engine, gemms, flops = conv_case(shape, dtype, args.repeats)
        n, c, o, size, k, s, p = shape
        label = f"{n},{c},{o},{size}x{size},{k},{s},{p}"
        print(f"{label:<26}{engine * 1e3:>11.2f}{gemms * 1e3:>11.2f}{engine / gemms:>8.2f}{flops / gemms / 1e9:>14.1f}")


if __name__ == "__main__":
    main()
