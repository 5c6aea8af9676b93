"""Page faults of a training step, with glibc's default allocator settings and with
`keep_freed_memory()` (the heap kept as the step's reusable workspace), side by side.

Each setting runs in its own process (the allocator setting is process-wide and cannot be
undone); after two warm-up steps, the minor page faults and system time of the next steps are
read from getrusage. A fault is a page of a freed temporary mapped in again, zeroed by the
kernel, before the step can write it.

    python benchmarks/page_faults.py [--models small-cnn,...] [--batch 64] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

import lance_ref
from lance_ref.allocator import keep_freed_memory
from lance_ref.nn import build_model
from lance_ref.optim import SGD
from vs_torch import MODELS, SHAPES, digits, sgd_step

SETTINGS = ("default", "keep_freed_memory")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{'model':<17} {'batch':>5} {'allocator':<18} {'faults/step':>11} {'MiB/step':>8} {'sys ms/step':>11} {'step ms':>8}")
    for name in args.models.split(","):
        for setting in SETTINGS:
            command = [sys.executable, __file__, f"--worker={setting}", f"--models={name}", f"--batch={args.batch}", f"--steps={args.steps}"]
            subprocess.run(command, check=True)


def worker(args):
    if args.worker == "keep_freed_memory":
        keep_freed_memory()
    name = args.models
    channels, size = SHAPES.get(name, (3, 32))
    x, y = digits(args.batch, size, channels, count=1)[0]
    lance_ref.manual_seed(0)
    model = build_model(name, 10, channels, size)
    step = sgd_step(model, SGD(model.parameters(), lr=0.01, momentum=0.9), x.astype(np.float32), y, lance_ref.kernels.backend())
    step(), step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    after, seconds = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    faults = (after.ru_minflt - before.ru_minflt) / args.steps
    print(f"{name:<17} {args.batch:>5} {args.worker:<18} {faults:>11.0f} {faults * resource.getpagesize() / 2**20:>8.1f} "
          f"{(after.ru_stime - before.ru_stime) / args.steps * 1e3:>11.1f} {seconds / args.steps * 1e3:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
