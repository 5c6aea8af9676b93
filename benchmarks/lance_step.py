"""Fine-tuning step time of LANCE against full backprop and per-step HOSVD, side by side.

The same model (same weights), the same batch of real digits and the same fine-tuned layers
are stepped by each method in turn, interleaved, and the median step (forward, backward, SGD
update) is compared. LANCE's bases are calibrated first (not part of the step). The last line
times LANCE's core projections alone on the inputs they see in the step, next to one read of
those inputs: the most that projecting inside the op producing the input could save.

    python benchmarks/lance_step.py [--model small-cnn] [--last-n 2] [--eps 0.9] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor
from lance_ref.allocator import keep_freed_memory
from lance_ref.compress import calibrate, prepare_finetune
from lance_ref.compress.transform import lance_layers
from lance_ref.data import load_mnist5k, normalize, resize
from lance_ref.nn import build_model, recording
from lance_ref.optim import SGD
from timing import run_times

METHODS = ("full", "hosvd", "lance")


def digits(batch: int, size: int, channels: int, count: int):
    """`count` batches of real digits, normalised, resized to `size` with `channels` channels."""
    data = load_mnist5k()
    images = resize(data.images[: batch * count], size, channels) if (size, channels) != (28, 1) else data.images[: batch * count]
    x = normalize(images, data.mean * channels, data.std * channels)
    return [(x[i * batch : (i + 1) * batch], data.labels[i * batch : (i + 1) * batch]) for i in range(count)]


def stepper(model_name, method, state, args, batches):
    """A closure running one SGD step of `method` on the first batch, the fine-tuned layers'
    names, and the model it steps."""
    model = build_model(model_name, num_classes=10, in_channels=args.channels, image_size=args.size)
    model.load_state_dict(state)
    names = prepare_finetune(model, args.last_n, method, args.eps, args.modes)
    if method == "lance":
        calibrate(model, (x for x, _ in batches))
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x, y = Tensor(batches[0][0]), batches[0][1]

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step, names, model


def projection_times(model, x, repeats: int) -> tuple:
    """Median seconds of all LANCE layers' core projections on the inputs they see in a training
    forward of `x`, and of one read (a sum) of those inputs."""
    layers = dict(lance_layers(model))
    with lance_ref.no_grad(), recording(layers) as recorded:
        model(x)
    inputs = [(layers[name], seen[0].data) for name, seen in recorded.items()]
    project = np.median(run_times(lambda: [layer.compressor(a) for layer, a in inputs], repeats))
    read = np.median(run_times(lambda: [a.sum() for _, a in inputs], repeats))
    return float(project), float(read)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--last-n", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.9)
    parser.add_argument("--modes", default="all", choices=["all", "chw"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    keep_freed_memory()
    lance_ref.manual_seed(0)
    state = build_model(args.model, num_classes=10, in_channels=args.channels, image_size=args.size).state_dict()
    batches = digits(args.batch, args.size, args.channels, count=8)
    steps, models = {}, {}
    for method in METHODS:
        steps[method], names, models[method] = stepper(args.model, method, state, args, batches)
    times = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            start = time.perf_counter()
            steps[method]()
            times[method].append(time.perf_counter() - start)
    median = {method: float(np.median(t[1:])) for method, t in times.items()}
    print(f"{args.model}, fine-tuning {', '.join(names)}; batch {args.batch}, eps {args.eps}, modes {args.modes}")
    for method in METHODS:
        print(f"  {method:<6} {median[method] * 1e3:8.2f} ms per step")
    print(f"  lance / full  = {median['lance'] / median['full']:.2f}   (target <= 1.2)")
    print(f"  lance / hosvd = {median['lance'] / median['hosvd']:.2f}   (target <= 0.33)")
    project, read = projection_times(models["lance"], Tensor(batches[0][0]), args.repeats)
    print(f"  lance core projections {project * 1e3:.2f} ms ({project / median['lance']:.1%} of the step); "
          f"one read of their inputs {read * 1e3:.2f} ms ({read / median['lance']:.1%})")


if __name__ == "__main__":
    main()
