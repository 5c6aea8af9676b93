"""A case for the pure-Rust LANCE step (`rust/lance-ref-core/examples/lance_step.rs`), written by
lance-ref's Python side, and the Python reference it must reproduce (f32: 1e-5 relative error,
f64: 1e-12; specs/compressed.md#lance-step).

Used by tests/test_lance_step_example.py (native) and, as a script, by `.ci/aarch64` under qemu:
`python tests/lance_step_case.py --binary PATH [--runner "qemu-aarch64 ..."] --folder DIR`.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from strategies import relative_error  # tests/ is on the path in pytest and when run as a script

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
STEPS, LR, PADDING = 3, 0.05, 1


def write_case(folder: Path, dtype, seed: int = 0) -> dict:
    """A conv layer (6 outputs, 4 inputs, 3x3, padding 1), a batch of 8 inputs (4, 8, 8), an
    output gradient and LANCE's bases calibrated on the batch at eps 0.9, saved as .npy files in
    `folder`; returns them."""
    from lance_ref import nn
    from lance_ref.compress import CompressedConv2d, calibrate

    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    x = rng.standard_normal((8, 4, 8, 8)).astype(dtype)
    layer = CompressedConv2d(nn.Conv2d(4, 6, 3, padding=PADDING, bias=False, dtype=dtype), "lance", eps=0.9)
    calibrate(layer, [x])
    case = dict(x=x, weight=layer.weight.data.copy(), grad_output=rng.standard_normal((8, 6, 8, 8)).astype(dtype))
    case.update({f"bases{n}": u for n, u in enumerate(layer.compressor.factors)})
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in case.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
    return case


def reference(case: dict, steps: int = STEPS, lr: float = LR) -> tuple:
    """(weight after `steps` LANCE steps, the last step's output), by lance-ref's NumPy
    reference kernels (not the Rust ones the example shares)."""
    import lance_ref.functional as F
    from lance_ref import Tensor, kernels
    from lance_ref.compress import conv2d_weight_grad

    factors = [case[f"bases{n}"] for n in range(4)]
    weight, output = case["weight"], None
    with kernels.use_backend("numpy"):
        for _ in range(steps):
            output = F.conv2d(Tensor(case["x"]), Tensor(weight), padding=PADDING).data
            core = kernels.tucker_project(case["x"], factors)
            weight = weight - lr * conv2d_weight_grad(core, factors, case["grad_output"], weight.shape, 1, PADDING)
    return weight, output


def run_example(binary, folder: Path, runner=(), *extra) -> subprocess.CompletedProcess:
    command = [*runner, str(binary), str(folder), "--steps", str(STEPS), "--lr", str(LR), "--padding", str(PADDING), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def check(binary, folder: Path, dtype, runner=()) -> dict:
    """Run the example on a fresh case of `dtype`; the relative errors of its weight and output
    against the reference (an AssertionError beyond the tolerance)."""
    case = write_case(folder, dtype)
    done = run_example(binary, folder, runner)
    assert done.returncode == 0, done.stderr
    weight, output = reference(case)
    errors = {name: relative_error(np.load(folder / file), want)
              for name, file, want in (("weight", "weight_trained.npy", weight), ("output", "output.npy", output))}
    assert max(errors.values()) < TOLERANCE[np.dtype(dtype)], errors
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True, help="the built lance_step example")
    parser.add_argument("--runner", default="", help="a command to run it under, e.g. 'qemu-aarch64 -L SYSROOT'")
    parser.add_argument("--folder", required=True, help="where the cases are written")
    args = parser.parse_args()
    for dtype in (np.float32, np.float64):
        errors = check(args.binary, Path(args.folder) / np.dtype(dtype).name, dtype, shlex.split(args.runner))
        print(f"lance_step {np.dtype(dtype).name}: relative error weight {errors['weight']:.2e}, output {errors['output']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
