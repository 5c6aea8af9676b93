"""The Rust kernels (lance_ref._core) against the fastest NumPy formulation, side by side.

For each kernel and each shape of a fixed grid of LANCE-like activations, the median time of the
Rust kernel is compared with the fastest of several NumPy formulations (the reference chain,
`np.einsum(optimize=True)`, `np.tensordot` chains), in float32 and float64, with one thread on
both sides and then with two (each setting in a fresh interpreter, since OpenBLAS reads its
thread count at import). It prints per shape the ratio numpy/rust, the Rust kernel's GB/s and
GFLOP/s against this machine's copy bandwidth and large-GEMM throughput measured in the same run,
then per kernel the median and minimum ratio against its target, and finally the LANCE
fine-tuning step with the Rust backend against the NumPy backend.

    python benchmarks/kernels.py [--quick] [--threads 1,2] [--dtypes float32,float64]
"""

from __future__ import annotations

import argparse
import json
import os
import string
import subprocess
import sys
from pathlib import Path

from timing import quiet_blas_env, run_times

# (shape (B, C, H, W), ranks per mode): LANCE-like activations, batch 32..128, channels 32..512,
# spatial 4x4..32x32, ranks 2..64.
GRID = [
    ((64, 512, 4, 4), (32, 16, 2, 2)),
    ((128, 512, 4, 4), (64, 64, 3, 3)),
    ((128, 256, 8, 8), (64, 32, 4, 4)),
    ((64, 256, 8, 8), (16, 8, 2, 2)),
    ((64, 128, 16, 16), (32, 16, 8, 8)),
    ((32, 128, 16, 16), (8, 4, 4, 4)),
    ((32, 64, 32, 32), (16, 8, 8, 8)),
    ((128, 32, 32, 32), (64, 8, 16, 16)),
]
TARGETS = {"tucker_project": 2.0, "tucker_reconstruct": 2.0, "gram": 1.5, "unfold": 1.5, "im2col": 1.5}


def median_seconds(fn, repeats: int) -> float:
    import numpy as np

    return float(np.median(run_times(fn, repeats)))


def einsum_chain(x, factors, project: bool):
    import numpy as np

    letters = string.ascii_lowercase[:4]
    terms, operands = [letters], [x]
    out = ""
    for n, (letter, u) in enumerate(zip(letters, factors)):
        new = letter.upper()
        terms.append(letter + new if project else new + letter)
        operands.append(u)
        out += new
    return np.einsum(",".join(terms) + "->" + out, *operands, optimize=True)


def tensordot_chain(x, factors, project: bool):
    """One tensordot per mode, in the reference's order (most shrinking / least growing first)."""
    import numpy as np

    def ratio(n):
        size, rank = factors[n].shape
        return rank / size if project else size / rank

    for n in sorted(range(4), key=ratio):
        x = np.moveaxis(np.tensordot(x, factors[n], axes=([n], [0] if project else [1])), -1, n)
    return np.ascontiguousarray(x)


def cases(shape, ranks, dtype):
    """(kernel, numpy candidates, rust call, bytes moved, flops) for one grid point."""
    import numpy as np

    import lance_ref._core as core
    from lance_ref.kernels import reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    factors = [np.linalg.qr(rng.standard_normal((i, k)))[0].astype(dtype) for i, k in zip(shape, ranks)]
    s = reference.tucker_project(x, factors)
    project_flops = reconstruct_flops = 0
    size = list(shape)
    for n in sorted(range(4), key=lambda n: ranks[n] / shape[n]):
        project_flops += 2 * np.prod(size) * ranks[n]
        size[n] = ranks[n]
    size = list(ranks)
    for n in sorted(range(4), key=lambda n: shape[n] / ranks[n]):
        size[n] = shape[n]
        reconstruct_flops += 2 * np.prod(size) * ranks[n]
    kernel3 = ((3, 3), (1, 1), (1, 1), (1, 1), 1)
    cols = reference.im2col(x[: max(1, shape[0] // 4)], *kernel3)
    x_small = x[: max(1, shape[0] // 4)]
    return [
        ("tucker_project", {
            "reference": lambda: reference.tucker_project(x, factors),
            "einsum": lambda: einsum_chain(x, factors, True),
            "tensordot": lambda: tensordot_chain(x, factors, True),
        }, lambda: core.tucker_project(x, factors), x.nbytes + s.nbytes, project_flops),
        ("tucker_reconstruct", {
            "reference": lambda: reference.tucker_reconstruct(s, factors),
            "einsum": lambda: einsum_chain(s, factors, False),
            "tensordot": lambda: tensordot_chain(s, factors, False),
        }, lambda: core.tucker_reconstruct(s, factors), x.nbytes + s.nbytes, reconstruct_flops),
        ("gram", {
            "reference": lambda: reference.gram(x, 1),
            "einsum": lambda: np.einsum("bchw,bdhw->cd", x, x, optimize=True),
        }, lambda: core.gram(x, 1), x.nbytes, x.size * shape[1]),  # one triangle: half of 2 size C
        ("unfold", {
            "reference": lambda: reference.unfold(x, 3),
            "moveaxis copy": lambda: np.ascontiguousarray(np.moveaxis(x, 3, 0)).reshape(shape[3], -1),
        }, lambda: core.unfold(x, 3), 2 * x.nbytes, 0),
        ("im2col", {
            "reference": lambda: reference.im2col(x_small, *kernel3),
        }, lambda: core.im2col(x_small, *kernel3), x_small.nbytes + cols.nbytes, 0),
    ]


def machine(dtype, repeats):
    """(GB/s of a single-threaded NumPy copy, counting read + write; GFLOP/s of a large GEMM
    with this process's BLAS threads) of this machine now."""
    import numpy as np

    a = np.ones(2**25, dtype=np.float64)  # 256 MiB
    b = np.empty_like(a)
    copy = 2 * a.nbytes / median_seconds(lambda: np.copyto(b, a), repeats) / 1e9
    m = np.ones((2048, 2048), dtype=dtype)
    gemm = 2 * 2048**3 / median_seconds(lambda: m @ m, repeats) / 1e9
    return copy, gemm


def measure(dtypes, repeats, quick):
    """Runs in a child with the thread settings in its environment; returns JSON rows."""
    import numpy as np

    from lance_ref.allocator import keep_freed_memory

    keep_freed_memory()  # as the CLI does: large temporaries are reused, not page-faulted again

    rows, peaks = [], {}
    for name in dtypes:
        dtype = np.dtype(name)
        peaks[name] = machine(dtype, repeats)
        for shape, ranks in GRID[::3] if quick else GRID:
            for kernel, candidates, rust, nbytes, flops in cases(shape, ranks, dtype):
                numpy_times = {label: median_seconds(fn, repeats) for label, fn in candidates.items()}
                best = min(numpy_times, key=numpy_times.get)
                rust_time = median_seconds(rust, repeats)
                rows.append(dict(kernel=kernel, shape=shape, ranks=ranks, dtype=name, numpy=best,
                                 numpy_ms=numpy_times[best] * 1e3, rust_ms=rust_time * 1e3,
                                 ratio=numpy_times[best] / rust_time, gbs=nbytes / rust_time / 1e9,
                                 gflops=flops / rust_time / 1e9, flops=float(flops)))
    return dict(rows=rows, peaks=peaks)


def step_time(backend: str):
    """(the LANCE line of benchmarks/lance_step.py, its milliseconds) with `backend`."""
    env = {**quiet_blas_env(), "LANCE_REF_BACKEND": backend}
    script = Path(__file__).with_name("lance_step.py")
    out = subprocess.run([sys.executable, str(script), "--repeats", "9"], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("lance "))
    return line, float(line.split()[1])


def report(threads, result):
    import numpy as np

    print(f"\n== {threads} thread(s) on both sides (OPENBLAS_NUM_THREADS={threads}, LANCE_CORE_THREADS={threads})")
    for name, (copy, gemm) in result["peaks"].items():
        print(f"   machine, {name}: single-threaded copy {copy:.1f} GB/s (read + write), large GEMM {gemm:.1f} GFLOP/s")
    print(f"   {'kernel':<19}{'shape':<20}{'ranks':<16}{'dtype':<9}{'numpy best':<15}{'ms':>7}{'rust ms':>9}"
          f"{'ratio':>7}{'GB/s':>7}{'%copy':>7}{'GFLOP/s':>9}{'%gemm':>7}{'ceiling':>9}")
    for r in result["rows"]:
        copy, gemm = result["peaks"][r["dtype"]]
        print(f"   {r['kernel']:<19}{str(tuple(r['shape'])):<20}{str(tuple(r['ranks'])):<16}{r['dtype']:<9}"
              f"{r['numpy']:<15}{r['numpy_ms']:7.2f}{r['rust_ms']:9.2f}{r['ratio']:7.2f}{r['gbs']:7.1f}"
              f"{100 * r['gbs'] / copy:6.0f}%{r['gflops']:9.1f}{100 * r['gflops'] / gemm:6.0f}%"
              + (f"{ceiling(r, gemm):9.2f}" if r["flops"] else f"{'-':>9}"))
    print("   summary (ratio = numpy time / rust time; ceiling = the ratio a kernel running at the large-GEMM")
    print("   throughput above would reach, so no GEMM-bound kernel can beat it):")
    for kernel, target in TARGETS.items():
        rows = [r for r in result["rows"] if r["kernel"] == kernel]
        ratios = [r["ratio"] for r in rows]
        median, low = float(np.median(ratios)), min(ratios)
        never_slower = kernel.startswith("tucker")
        ok = median >= target and (low >= 1.0 or not never_slower)
        rule = f"median >= {target}" + (" and min >= 1" if never_slower else "")
        bound = ""
        if all(r["flops"] for r in rows):
            bound = f"  median ceiling {np.median([ceiling(r, result['peaks'][r['dtype']][1]) for r in rows]):5.2f}"
        print(f"   {kernel:<19} median {median:5.2f}  min {low:5.2f}{bound}   target {rule}: {'PASS' if ok else 'FAIL'}")


def ceiling(row, gemm_gflops):
    """NumPy's time over the time of the row's FLOPs at `gemm_gflops`: the best ratio possible."""
    return row["numpy_ms"] / 1e3 / (row["flops"] / (gemm_gflops * 1e9))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every third shape, fewer repeats")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtypes, repeats = args.dtypes.split(","), 3 if args.quick else 7
    if args.child:
        print(json.dumps(measure(dtypes, repeats, args.quick)))
        return
    import lance_ref._core as core

    print(f"lance_ref._core on {core.simd_isa()} (this CPU: {', '.join(core.available_isas())})")
    print("load average at start: %.2f (figures are only comparable on an idle machine)" % os.getloadavg()[0])
    for threads in args.threads.split(","):
        env = {**quiet_blas_env(), "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "LANCE_CORE_THREADS": threads}
        child = [sys.executable, __file__, "--child", "--dtypes", args.dtypes] + (["--quick"] if args.quick else [])
        out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
        report(threads, json.loads(out.stdout))
    print("\n== LANCE fine-tuning step (benchmarks/lance_step.py), Rust backend against NumPy backend")
    steps = {backend: step_time(backend) for backend in ("numpy", "rust")}
    for backend, (line, _) in steps.items():
        print(f"   {backend:<6}{line}")
    print(f"   numpy / rust = {steps['numpy'][1] / steps['rust'][1]:.2f}")
    print("load average at end: %.2f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
