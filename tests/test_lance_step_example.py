"""The pure-Rust LANCE step (`rust/lance-ref-core/examples/lance_step.rs`) reproduces lance-ref's
Python reference natively; `.ci/aarch64` runs the same check under qemu-aarch64."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lance_step_case import check, run_example, write_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def binary():
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: the Rust example cannot be built")
    subprocess.run(["cargo", "build", "-q", "--release", "--example", "lance_step", "-p", "lance-ref-core"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "examples" / "lance_step"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_rust_step_equals_the_python_reference(binary, tmp_path, dtype):
    check(binary, tmp_path, dtype)


def damage(folder: Path) -> dict:
    """Each kind of bad input, as a change to a good float32 case in `folder`."""
    return {
        "missing": lambda: (folder / "bases2.npy").unlink(),
        "truncated": lambda: (folder / "x.npy").write_bytes((folder / "x.npy").read_bytes()[:-7]),
        "dtype tag": lambda: np.save(folder / "grad_output.npy", np.zeros((8, 6, 8, 8), np.int32)),
        "mixed dtypes": lambda: np.save(folder / "x.npy", np.zeros((8, 4, 8, 8))),
        "shape": lambda: np.save(folder / "grad_output.npy", np.zeros((8, 6, 8, 7), np.float32)),
        "not npy": lambda: (folder / "weight.npy").write_text("weights"),
    }


@pytest.mark.parametrize("kind, message", [
    ("missing", "bases2.npy: cannot read it"),
    ("truncated", "x.npy: shape [8, 4, 8, 8] of <f4 needs 8192 data bytes, the file holds 8185 (truncated?)"),
    ("dtype tag", "grad_output.npy: dtype tag \"<i4\": expected '<f4' (float32) or '<f8' (float64)"),
    ("mixed dtypes", "x.npy: dtype <f8, but weight.npy's differs"),
    ("shape", "grad must have shape"),
    ("not npy", "weight.npy: not a .npy file"),
])
def test_bad_input_is_one_line_and_exit_2_without_a_panic(binary, tmp_path, kind, message):
    write_case(tmp_path, np.float32)
    damage(tmp_path)[kind]()
    done = run_example(binary, tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("lance_step: error: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "panicked" not in done.stderr


@pytest.mark.parametrize("arguments, message", [
    ([], "--steps is required"),
    (["--steps", "2"], "--lr is required"),
    (["--steps", "two", "--lr", "0.1"], "--steps must be a count, got \"two\""),
    (["--steps", "1", "--lr", "0.1", "--stride", "0"], "--stride must be an integer >= 1"),
    (["--steps", "1", "--lr", "0.1", "--bogus", "1"], "unknown flag --bogus"),
])
def test_bad_flags_are_one_line_and_exit_2(binary, tmp_path, arguments, message):
    write_case(tmp_path, np.float32)
    done = subprocess.run([str(binary), str(tmp_path), *arguments], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
