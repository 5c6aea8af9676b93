"""Shared test tools: finite-difference gradient checks and a fresh interpreter to run code in
(the hypothesis strategies are in `strategies.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import lance_ref
from lance_ref import Tensor, no_grad

# Variables that choose how the Rust kernels run; a subprocess starts without them unless given.
CORE_ENV = ("LANCE_CORE_ISA", "LANCE_CORE_THREADS")


def run_python(code: str, env_changes: dict, unset=CORE_ENV) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, the variables `unset` removed and `env_changes` set.

    `python -c` imports from its working directory first: it runs where the lance_ref that
    these tests import lives (the source tree or site-packages).
    """
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(lance_ref.__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def numerical_vjp(fn, arrays, index, v, eps=1e-6):
    """<v, d fn / d arrays[index]> by central differences, element by element."""
    x = arrays[index]
    grad = np.zeros(x.shape, dtype=np.float64)

    def value(shifted):
        with no_grad():
            args = [Tensor(a) for a in arrays]
            args[index] = Tensor(shifted)
            return float((fn(*args).data * v).sum())

    for position in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[position] += eps
        minus[position] -= eps
        grad[position] = (value(plus) - value(minus)) / (2 * eps)
    return grad


def gradcheck(fn, *arrays, wrt=None, eps=1e-6, rtol=1e-6, atol=1e-8, seed=20261121):
    """Check the engine's VJP of `fn` against central differences in float64.

    `arrays` are float64 ndarrays (any layout); `wrt` lists the argument indices to check
    (default all). A random upstream gradient v makes this a full Jacobian test.
    """
    wrt = range(len(arrays)) if wrt is None else wrt
    tensors = [Tensor(a, requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = fn(*tensors)
    assert out.dtype == np.float64
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(v)
    for i in wrt:
        expected = numerical_vjp(fn, list(arrays), i, v, eps)
        got = tensors[i].grad
        assert got is not None, f"argument {i} received no gradient"
        assert got.shape == arrays[i].shape
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"argument {i}")


def assert_float32_matches_float64(fn, x, rtol=1e-5, atol=1e-6):
    """`fn` and its VJP (upstream ones) agree in float32 and float64, and keep the dtype."""
    results = []
    for dtype in (np.float32, np.float64):
        t = Tensor(x.astype(dtype), requires_grad=True)
        y = fn(t)
        y.backward(np.ones(y.shape, dtype))
        assert y.dtype == t.grad.dtype == dtype
        results.append((y.data, t.grad))
    for a32, a64 in zip(*results):
        np.testing.assert_allclose(a32, a64, rtol=rtol, atol=atol)


def cut_before_task_1(run, monkeypatch) -> None:
    """Call `run()`, a continual benchmark, and interrupt it before its task 1 (index 1): the
    checkpoint of task 0 stays."""
    import pytest

    from lance_ref.continual import loop

    original = loop.train_task

    def stop_at_task_1(model, strategy, task, *args, **kwargs):
        if task.index == 1:
            raise KeyboardInterrupt
        return original(model, strategy, task, *args, **kwargs)

    monkeypatch.setattr(loop, "train_task", stop_at_task_1)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(loop, "train_task", original)


def interrupted_and_resumed(run, tmp_path, monkeypatch) -> tuple:
    """(results of `run(folder)` uninterrupted, results of a run cut by an interrupt before its
    task 1 and resumed with `resume=True`): `run(folder, **overrides)` runs a continual benchmark."""
    whole = run(tmp_path / "whole")
    cut_before_task_1(lambda: run(tmp_path / "cut"), monkeypatch)
    return whole, run(tmp_path / "cut", resume=True)
