"""`lance-ref finetune-sweep`: every method and eps over several seeds, as one table (and a plot).

Each seed pretrains its source model once (in the `full` run) and every other run of that
seed fine-tunes from the same checkpoint, so methods differ only in how they fine-tune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..compress import METHODS
from ..io import prepare_output_dir
from ..options import flag
from . import finetune
from .report import pyplot, save_figure, save_results, summarise
from .supervised import DATASET_HELP, MODEL_HELP

COLUMNS = ("test_accuracy", "activation_bytes", "full_activation_bytes", "step_seconds")
COMPRESSED = tuple(m for m in METHODS if m != "full")  # the compression methods, each over every eps


@dataclass
class SweepConfig:
    """The grid of a sweep; the fine-tuning settings are those of `finetune`."""

    model: str = flag("small-cnn", MODEL_HELP)
    dataset: str = flag("mnist5k", DATASET_HELP)
    last_n: int = flag(2, "fine-tune the model's last N conv layers (and its classifier)")
    modes: str = flag("all", "the modes compressed, all (as upstream) or chw (all but the batch)")
    eps_values: str = flag("0.5,0.7,0.8,0.9,0.95", "the eps of each hosvd and lance run, comma-separated, each in (0, 1]")
    seeds: str = flag("0,1,2", "the seeds, comma-separated; each pretrains its source model once")
    pretrain_epochs: int = flag(6, "epochs of training on the source classes")
    epochs: int = flag(6, "epochs of fine-tuning")


def runs(config: SweepConfig):
    """(seed, method, eps) of every run, `full` first in each seed (it pretrains)."""
    for seed in finetune.parse_list(config.seeds, int):
        yield seed, "full", 1.0
        for method in COMPRESSED:
            for eps in finetune.parse_list(config.eps_values, float):
                yield seed, method, eps


def format_table(summary: list) -> str:
    lines = [f"{'method':<7}{'eps':>6}{'seeds':>6}{'accuracy %':>12}{'+-':>7}{'act. KiB':>10}{'full KiB':>10}{'ratio':>8}{'ms/step':>9}"]
    for s in summary:
        lines.append(
            f"{s['method']:<7}{s['eps'] if s['method'] != 'full' else '-':>6}{s['seeds']:>6}{s['test_accuracy']:>12.2f}"
            f"{s['test_accuracy_std']:>7.2f}{s['activation_bytes'] / 1024:>10.1f}{s['full_activation_bytes'] / 1024:>10.1f}"
            f"{s['full_activation_bytes'] / s['activation_bytes']:>8.1f}{s['step_seconds'] * 1e3:>9.1f}"
        )
    return "\n".join(lines)


def plot(summary: list, out: Path, title: str) -> None:
    """accuracy_memory.png: accuracy against activation memory, one curve per method, labelled
    by eps (needs matplotlib)."""
    plt = pyplot()
    if plt is None:
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    for method, marker in (("full", "s"), ("hosvd", "o"), ("lance", "^")):
        points = sorted((s["activation_bytes"] / 1024, s["test_accuracy"], s["eps"]) for s in summary if s["method"] == method)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=method)
        for kib, accuracy, eps in points if method != "full" else ():
            axes.annotate(f"{eps:g}", (kib, accuracy), fontsize=7, textcoords="offset points", xytext=(3, 3))
    axes.set(xscale="log", xlabel="activation memory of the fine-tuned layers (KiB, per step)", ylabel="test accuracy (%)")
    axes.legend()
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, out / "accuracy_memory.png")


def run(config: SweepConfig, out: str | Path, show: bool = True) -> dict:
    """Run the grid; write `out`/results.json (every run and the summary) and the plot."""
    rows = []
    base = finetune.FinetuneConfig(
        model=config.model, dataset=config.dataset, last_n=config.last_n, modes=config.modes,
        pretrain_epochs=config.pretrain_epochs, epochs=config.epochs,
    )
    grid = list(runs(config))
    for seed, method, eps in grid:  # every setting is checked before the first run
        replace(base, seed=seed, method=method, eps=eps).check()
    out = prepare_output_dir(out)
    for seed, method, eps in grid:
        folder = out / f"seed{seed}" / (method if method == "full" else f"{method}-eps{eps:g}")
        checkpoint = "" if method == "full" else str(out / f"seed{seed}" / "full" / "source_model.npz")
        result = finetune.run(replace(base, seed=seed, method=method, eps=eps, checkpoint=checkpoint), folder, show=False)
        rows.append(dict(seed=seed, method=method, eps=eps, **{k: result[k] for k in COLUMNS}))
        if show:
            print(f"seed {seed} {method:<5} eps {eps:<5g} accuracy {result['test_accuracy']:.2f}% "
                  f"activation bytes {result['activation_bytes']:,}", flush=True)
    summary = summarise(rows, ("method", "eps"), COLUMNS, "test_accuracy")
    results = dict(command="finetune-sweep", config=asdict(config), runs=rows, summary=summary, table=format_table(summary))
    save_results(out, results)
    plot(summary, out, f"{config.model} on {config.dataset}, last {config.last_n} convs; mean over seeds {config.seeds}; points labelled by eps")
    return results
