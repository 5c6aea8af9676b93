"""`lance-ref selection-sweep`: budgeted neuron selection against full fine-tuning, every policy
at every budget over several seeds (specs/selection.md#fine-tuning).

Each seed pretrains its source model once (in the `full` run) and every policy run of that seed
fine-tunes from the same checkpoint, so the runs differ only in which channels update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..io import prepare_output_dir
from ..options import flag
from . import finetune
from .finetune import parse_list
from .report import save_results, summarise
from .supervised import DATASET_HELP, MODEL_HELP

COLUMNS = ("test_accuracy", "updated_parameters", "backward_seconds")


@dataclass
class SelectionSweepConfig:
    """The grid of a sweep; the fine-tuning settings are those of `finetune`."""

    model: str = flag("small-cnn", MODEL_HELP)
    dataset: str = flag("mnist5k", DATASET_HELP)
    last_n: int = flag(3, "fine-tune the model's last N conv layers (and its classifier)")
    policies: str = flag(",".join(finetune.SELECTION_METHODS), "the selection policies, comma-separated")
    budgets: str = flag("0.05,0.1,0.2,0.3", "the budgets, comma-separated, each a ratio (0.1) or a parameter count (5000)")
    seeds: str = flag("0,1,2", "the seeds, comma-separated; each pretrains its source model once")
    pretrain_epochs: int = flag(6, "epochs of training on the source classes")
    epochs: int = flag(6, "epochs of fine-tuning")


def runs(config: SelectionSweepConfig):
    """(seed, method, budget) of every run, `full` (no budget: "all") first in each seed."""
    for seed in parse_list(config.seeds, int):
        yield seed, "full", "all"
        for budget in parse_list(config.budgets, str):
            for policy in parse_list(config.policies, str):
                yield seed, policy, budget


def compare(rows: list, first: str = "neq", second: str = "random") -> list:
    """Per budget where both ran: the mean accuracy difference `first` - `second` over seeds and
    the seeds on which `first` is better."""
    comparisons = []
    for budget in dict.fromkeys(r["budget"] for r in rows if r["method"] == first):
        pairs = [(a["test_accuracy"], b["test_accuracy"]) for a in rows for b in rows
                 if a["budget"] == b["budget"] == budget and a["seed"] == b["seed"] and (a["method"], b["method"]) == (first, second)]
        if pairs:
            difference = np.array([a - b for a, b in pairs])
            comparisons.append(dict(budget=budget, difference=float(difference.mean()), wins=int((difference > 0).sum()), seeds=len(pairs)))
    return comparisons


def format_table(summary: list, comparisons: list) -> str:
    full = next(s for s in summary if s["method"] == "full")
    lines = [f"{'method':<8}{'budget':>7}{'seeds':>6}{'accuracy %':>12}{'+-':>7}{'updated':>9}{'backward s':>12}{'vs full':>9}"]
    for s in summary:
        lines.append(
            f"{s['method']:<8}{s['budget']:>7}{s['seeds']:>6}{s['test_accuracy']:>12.2f}{s['test_accuracy_std']:>7.2f}"
            f"{s['updated_parameters']:>9.0f}{s['backward_seconds']:>12.2f}{full['backward_seconds'] / s['backward_seconds']:>8.2f}x"
        )
    for c in comparisons:
        lines.append(f"neq - random at budget {c['budget']}: {c['difference']:+.2f} points (neq better on {c['wins']}/{c['seeds']} seeds)")
    return "\n".join(lines)


def run(config: SelectionSweepConfig, out: str | Path, show: bool = True) -> dict:
    """Run the grid; write `out`/results.json (every run, the summary and the table)."""
    base = finetune.FinetuneConfig(
        model=config.model, dataset=config.dataset, last_n=config.last_n, pretrain_epochs=config.pretrain_epochs, epochs=config.epochs,
    )
    unknown = [p for p in parse_list(config.policies, str) if p not in finetune.SELECTION_METHODS]
    if unknown:
        raise ValueError(f"policies must be among {finetune.SELECTION_METHODS}, got {unknown}")
    grid = list(runs(config))
    for _, method, budget in grid:  # every setting is checked before the first run
        replace(base, method=method, budget=budget).check()
    out = prepare_output_dir(out)
    rows = []
    for seed, method, budget in grid:
        full = method == "full"
        folder = out / f"seed{seed}" / (method if full else f"{method}-budget{budget}")
        checkpoint = "" if full else str(out / f"seed{seed}" / "full" / "source_model.npz")
        settings = replace(base, seed=seed, method=method, checkpoint=checkpoint, **({} if full else dict(budget=budget)))
        result = finetune.run(settings, folder, show=False)
        rows.append(dict(seed=seed, method=method, budget=budget, **{k: result[k] for k in COLUMNS}))
        if show:
            print(f"seed {seed} {method:<6} budget {budget:<5} accuracy {result['test_accuracy']:.2f}% "
                  f"updated {result['updated_parameters']:,} backward {result['backward_seconds']:.2f} s", flush=True)
    summary, comparisons = summarise(rows, ("method", "budget"), COLUMNS, "test_accuracy"), compare(rows)
    results = dict(command="selection-sweep", config=asdict(config), runs=rows, summary=summary, comparisons=comparisons,
                   table=format_table(summary, comparisons))
    save_results(out, results)
    return results
