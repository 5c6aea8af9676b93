"""Training-step time of lance-ref (Rust and NumPy backends) against torch eager, side by side.

For each zoo model, dtype and batch: the same weights (checked equal first: the twins' logits
must match), the same batch of real digits, SGD with momentum; the steps of each contender are
interleaved and the median compared. Each thread count runs in its own process (BLAS reads its
thread count at start), with torch's OpenMP threads and NumPy's OpenBLAS threads told not to
spin between ops. Without torch the lance-ref columns print alone. The GEMM limit is the step's
conv and linear FLOPs (forward, input and weight gradients) at the GEMM throughput this machine
measures for a square matmul, so `/limit` says how far a step is from pure GEMM time.
The LANCE rows time the fine-tuning step of the last 4 convs (eps 0.9) on each backend.

    python benchmarks/vs_torch.py [--models small-cnn,...] [--batches 64,128] [--threads 1,2]
                                  [--dtypes float32,float64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor, kernels
from lance_ref.allocator import keep_freed_memory
from lance_ref.compress import calibrate, prepare_finetune
from lance_ref.nn import Conv2d, Linear, build_model, recording
from lance_ref.optim import SGD
from lance_step import digits
from timing import quiet_blas_env

MODELS = ("small-cnn", "alexnet-gpm", "resnet18-reduced", "mobilenetv2")
SHAPES = {"small-cnn": (1, 28)}  # (channels, size); the others take the digits as 32x32 RGB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="64,128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{'model':<17} {'dtype':<8} {'batch':>5} {'thr':>3} {'rust ms':>9} {'numpy ms':>9} {'torch ms':>9} "
          f"{'rust/torch':>10} {'numpy/torch':>11} {'numpy/rust':>10} {'limit ms':>9} {'rust/limit':>10}")
    for threads in args.threads.split(","):
        # OMP_WAIT_POLICY=PASSIVE and quiet_blas_env: torch's OpenMP threads and NumPy's OpenBLAS
        # threads sleep after each op instead of spinning on the core the next op's threads need.
        env = dict(quiet_blas_env(), OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   LANCE_CORE_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
        command = [sys.executable, __file__, "--worker", threads] + [f"--{k}={getattr(args, k)}" for k in ("models", "batches", "dtypes", "repeats")]
        subprocess.run(command, env=env, check=True)


def worker(args):
    keep_freed_memory()
    torch = optional_torch(args.worker)
    gemm_flops_per_second = {dtype: gemm_throughput(np.dtype(dtype)) for dtype in args.dtypes.split(",")}
    for name in args.models.split(","):
        channels, size = SHAPES.get(name, (3, 32))
        for dtype in map(np.dtype, args.dtypes.split(",")):
            for batch in map(int, args.batches.split(",")):
                x, y = digits(batch, size, channels, count=1)[0]
                x = x.astype(dtype)
                lance_ref.manual_seed(0)
                state = build_model(name, 10, channels, size, dtype=dtype).state_dict()
                steps = {}
                for backend in ("rust", "numpy") if kernels.backend() == "rust" else ("numpy",):
                    model = build_model(name, 10, channels, size, dtype=dtype)
                    model.load_state_dict(state)
                    steps[backend] = sgd_step(model, SGD(model.parameters(), lr=0.01, momentum=0.9), x, y, backend)
                if torch is not None:
                    steps["torch"] = torch_step(torch, name, state, x, y, channels, size, model)
                medians = interleaved_medians(steps, args.repeats)
                limit = step_flops(model, x) / gemm_flops_per_second[dtype.name]
                print(row(name, dtype.name, batch, args.worker, medians, limit), flush=True)
        lance_rows(name, channels, size, args)


def sgd_step(model, optimizer, x, y, backend):
    """One SGD step of `model` on (x, y) with the `backend` kernels, as a closure."""

    def step():
        with kernels.use_backend(backend):
            optimizer.zero_grad()
            F.cross_entropy(model(Tensor(x)), y).backward()
            optimizer.step()

    return step


def optional_torch(threads: int):
    try:
        import torch
    except ImportError:
        print(f"(torch is not installed: lance-ref columns only, {threads} thread(s))")
        return None
    torch.set_num_threads(threads)
    return torch


def torch_step(torch, name, state, x, y, channels, size, model):
    """The torch twin's SGD step, after checking its eval-mode logits equal lance-ref's."""
    from torch_twins import build_twin

    twin = build_twin(name, 10, channels, size).to(getattr(torch, x.dtype.name))
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    twin.eval(), model.eval()
    expected = model(Tensor(x)).data
    got = twin(torch.from_numpy(x)).detach().numpy()
    tolerance = 1e-3 if x.dtype == np.float32 else 1e-9
    if not np.abs(got - expected).max() <= tolerance * np.abs(expected).max():
        raise SystemExit(f"{name}: the torch twin's logits differ from lance-ref's; not comparable")
    twin.train(), model.train()
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(twin(inputs), targets).backward()
        optimizer.step()

    return step


def interleaved_medians(steps: dict, repeats: int) -> dict:
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def gemm_throughput(dtype) -> float:
    """FLOP/s of NumPy's (BLAS) 1024^3 matmul in `dtype`: the best of 5."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def step_flops(model, x) -> float:
    """2 x MACs of every conv and linear layer, three times (forward, input and weight
    gradients), less the first layer's input gradient (the images need none)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (Conv2d, Linear))}
    with recording(layers, "output") as outputs:
        model(Tensor(x))
    macs = []
    for name, layer in layers.items():
        out = outputs[name][0]
        per_output = layer.weight.data[0].size  # C/groups kh kw, or in_features
        macs.append(out.data.size * per_output)
    return 2 * (3 * sum(macs) - macs[0])


def row(name, dtype, batch, threads, medians, limit) -> str:
    ms = {k: v * 1e3 for k, v in medians.items()}

    def ratio(a, b):
        return f"{ms[a] / ms[b]:.2f}" if a in ms and b in ms else "-"

    def cell(k):
        return f"{ms[k]:9.1f}" if k in ms else f"{'-':>9}"

    fastest = ms.get("rust", ms["numpy"])
    return (f"{name:<17} {dtype:<8} {batch:>5} {threads:>3} {cell('rust')} {cell('numpy')} {cell('torch')} "
            f"{ratio('rust', 'torch'):>10} {ratio('numpy', 'torch'):>11} {ratio('numpy', 'rust'):>10} "
            f"{limit * 1e3:9.1f} {fastest / (limit * 1e3):10.2f}")


def lance_rows(name, channels, size, args):
    """The LANCE fine-tuning step (last 4 convs or all if fewer, eps 0.9) on each backend, float32."""
    if kernels.backend() != "rust":
        return
    for batch in map(int, args.batches.split(",")):
        batches = digits(batch, size, channels, count=4)
        steps = {}
        for backend in ("rust", "numpy"):
            lance_ref.manual_seed(0)
            model = build_model(name, 10, channels, size)
            last_n = min(4, sum(isinstance(m, Conv2d) for m in model.modules()))
            prepare_finetune(model, last_n, "lance", 0.9, "all")
            with kernels.use_backend(backend):
                calibrate(model, (x for x, _ in batches))
            optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
            steps[backend] = sgd_step(model, optimizer, *batches[0], backend)
        medians = interleaved_medians(steps, args.repeats)
        print(f"{name:<17} LANCE last {last_n}, float32, batch {batch:>4}, {args.worker} thr: rust {medians['rust'] * 1e3:.1f} ms, "
              f"numpy {medians['numpy'] * 1e3:.1f} ms, numpy/rust {medians['numpy'] / medians['rust']:.2f}", flush=True)


if __name__ == "__main__":
    main()
