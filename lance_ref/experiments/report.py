"""Result files shared by the experiments: per-epoch CSV and, with matplotlib, curves."""

from __future__ import annotations

import csv
import io
import platform
import sys
from functools import cache
from pathlib import Path

import numpy as np

from .. import TORCH_SEMANTICS, __version__, kernels
from ..io import save_bytes, save_json


def environment() -> dict:
    """What produced a result: lance-ref's version, the torch release it follows, the kernels'
    backend and instruction set, NumPy, Python and the machine."""
    return dict(
        lance_ref=__version__, torch_semantics=TORCH_SEMANTICS, backend=kernels.backend(), simd_isa=kernels.simd_isa(),
        numpy=np.__version__, python=platform.python_version(), machine=platform.machine(),
    )


def save_results(out: Path, results: dict) -> dict:
    """Write `out`/results.json: `results` with the `environment()` that produced them; returns them."""
    results["environment"] = environment()
    save_json(out / "results.json", results)
    return results


def summarise(rows: list, keys: tuple, columns: tuple, spread: str) -> list:
    """One row per distinct value of `keys` (in first-seen order) over the runs `rows`: the
    number of `seeds`, the mean of each of `columns`, and the std of `spread` as `<spread>_std`."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return [
        dict(zip(keys, key), seeds=len(group), **{f"{spread}_std": float(np.std([r[spread] for r in group]))},
             **{c: float(np.mean([r[c] for r in group])) for c in columns})
        for key, group in groups.items()
    ]


@cache
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None without the `plot` extra (said
    once, on stderr)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: plots skipped, matplotlib is not installed (pip install 'lance-ref[plot]' to get them)", file=sys.stderr)
        return None
    return plt


def save_figure(figure, path: Path) -> None:
    """Write `figure` as a PNG atomically and release it."""
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    pyplot().close(figure)
    save_bytes(path, image.getvalue())


def write_history(out: Path, history: list[dict], title: str) -> None:
    """`history.csv` (one row per epoch) and, if matplotlib is installed, `curves.png` under `title`."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    save_bytes(out / "history.csv", text.getvalue().encode())
    plt = pyplot()
    if plt is None:
        return
    epochs = [row["epoch"] for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row["loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss")
    for key in ("train_accuracy", "test_accuracy"):
        right.plot(epochs, [row[key] for row in history], marker="o", label=key.replace("_", " "))
    right.set(xlabel="epoch", ylabel="accuracy (%)")
    right.legend()
    for axes in (left, right):
        axes.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, out / "curves.png")
