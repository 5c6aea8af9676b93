"""A fine-tuning step's measured peak memory next to its ledger: full backprop, per-step HOSVD
and LANCE side by side (specs/memory.md#measured-peak).

Each zoo model sees the bundled digits (28x28 grey for small-cnn, resized to 32x32 RGB for the
others) with untrained weights, seeded. For each scope (its last 2, last 4 or all conv layers
fine-tuned with the classifier, everything else frozen, as `lance-ref finetune` does) and batch,
each method takes one warm-up step and one measured step (SGD lr 0.05, gradient clipping 2.0;
LANCE's bases calibrated first on `--calibration-batches` batches). Columns, in MiB:

- P: persistent bytes (parameters, buffers, gradients, optimiser state);
- K: the ledger's activation bytes of the whole step (what backward keeps);
- peak: the measured peak of the step (resident bytes + tracemalloc's peak);
- A: the largest input + output of any single op of the step;
- W: the workspace budget (`lance_ref.kernels.workspace_bytes()`);
- transient: (peak - P - K - W) / A, the op-sized arrays alive beyond what is accounted for.

Then, per model, scope and batch: full backprop's K and peak over LANCE's (and HOSVD's).

    python benchmarks/peak_memory.py [--models small-cnn,mobilenetv2] [--batches 64,128] [--eps 0.9]
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import lance_ref
from lance_ref import memory
from lance_ref.allocator import keep_freed_memory
from lance_ref.compress import calibrate, prepare_finetune
from lance_ref.data import load_mnist5k, normalize, resize
from lance_ref.kernels import workspace_bytes
from lance_ref.nn import Conv2d, build_model
from lance_ref.optim import SGD
from lance_ref.tensor import Function
from lance_ref.train import train_step

MODELS = ("small-cnn", "alexnet-gpm", "resnet18-reduced", "mobilenetv2")
METHODS = ("full", "hosvd", "lance")
SCOPES = ("2", "4", "all")
MIB = 2**20


@contextmanager
def largest_op():
    """Within the block, [the largest input + output bytes of any op applied] (a one-item list)."""
    largest, apply = [0], Function.apply.__func__

    def observed(cls, *inputs, **params):
        out = apply(cls, *inputs, **params)
        arrays = [getattr(t, "data", t) for t in inputs] + [out.data]
        largest[0] = max(largest[0], sum(a.nbytes for a in arrays if hasattr(a, "nbytes")))
        return out

    Function.apply = classmethod(observed)
    try:
        yield largest
    finally:
        Function.apply = classmethod(apply)


def digits(model: str, batch: int, count: int):
    """`count` batches of real digits, normalised, as the model takes them."""
    data = load_mnist5k()
    images = data.images[: batch * count]
    channels = 1 if model == "small-cnn" else 3
    if channels == 3:
        images = resize(images, 32, channels=3)
    x = normalize(images, data.mean * channels, data.std * channels)
    return [(x[i * batch : (i + 1) * batch], data.labels[i * batch : (i + 1) * batch]) for i in range(count)]


def measure(name: str, state: dict, method: str, last_n: int, batches, eps: float) -> dict:
    """P, K, peak and A of one measured step (after a warm-up step) of `method`."""
    channels = batches[0][0].shape[1]
    model = build_model(name, num_classes=10, in_channels=channels, image_size=batches[0][0].shape[2])
    model.load_state_dict(state)
    prepare_finetune(model, last_n, method, eps)
    if method == "lance":
        calibrate(model, (x for x, _ in batches))
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    x, y = batches[0]
    with largest_op() as largest:
        optimizer.zero_grad()
        train_step(model, optimizer, x, y, clip_grad_norm=2.0)
    optimizer.zero_grad()
    resident = memory.resident_bytes(model, optimizer, (x, y))
    step, peak = memory.measure_step(lambda: train_step(model, optimizer, x, y, clip_grad_norm=2.0, keep_ledger=True), resident)
    return dict(P=memory.persistent_bytes(model, optimizer), K=step.ledger.bytes(), peak=peak, A=largest[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scopes", default=",".join(SCOPES), help="last N conv layers, or 'all'")
    parser.add_argument("--batches", default="64,128")
    parser.add_argument("--eps", type=float, default=0.9)
    parser.add_argument("--calibration-batches", type=int, default=4)
    args = parser.parse_args(argv)
    keep_freed_memory()
    methods, w = args.methods.split(","), workspace_bytes()
    print(f"fine-tuning step memory, MiB (eps {args.eps}, workspace W = {w / MIB:.0f} MiB, backend {lance_ref.kernels.backend()})")
    print(f"{'model':<18}{'scope':>6}{'batch':>6}  {'method':<6}{'P':>8}{'K':>8}{'peak':>9}{'A':>8}{'W':>6}{'transient':>11}")
    ratios = []
    for name in args.models.split(","):
        batch_sizes = [int(b) for b in args.batches.split(",")]
        lance_ref.manual_seed(0)
        probe = build_model(name, num_classes=10, in_channels=1 if name == "small-cnn" else 3, image_size=28 if name == "small-cnn" else 32)
        state, convs = probe.state_dict(), sum(isinstance(m, Conv2d) for m in probe.modules())
        scopes = sorted({convs if s == "all" else min(int(s), convs) for s in args.scopes.split(",")})
        for last_n in scopes:
            for batch in batch_sizes:
                batches = digits(name, batch, args.calibration_batches)
                rows = {}
                for method in methods:
                    rows[method] = row = measure(name, state, method, last_n, batches, args.eps)
                    transient = (row["peak"] - row["P"] - row["K"] - w) / row["A"]
                    scope = "all" if last_n == convs else str(last_n)
                    print(f"{name:<18}{scope:>6}{batch:>6}  {method:<6}{row['P'] / MIB:>8.2f}{row['K'] / MIB:>8.2f}"
                          f"{row['peak'] / MIB:>9.1f}{row['A'] / MIB:>8.1f}{w / MIB:>6.0f}{transient:>11.2f}", flush=True)
                ratios.append((name, last_n, batch, rows))
    if "full" in methods:
        print("\nfull backprop over each method: ledger K (whole step) and measured peak")
        for name, last_n, batch, rows in ratios:
            figures = "  ".join(
                f"{m}: K {rows['full']['K'] / rows[m]['K']:.1f}x, peak {rows['full']['peak'] / rows[m]['peak']:.2f}x"
                for m in methods if m != "full"
            )
            print(f"{name:<18} last {last_n:>2}, batch {batch:>3}: {figures}")


if __name__ == "__main__":
    main()
