"""`lance-ref continual-sweep`: every strategy over several seeds, as one table (specs/continual.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..continual import STRATEGIES
from ..io import prepare_output_dir
from ..options import flag
from . import continual
from .finetune import parse_list
from .report import save_results, summarise

FIELDS = {f.name: field(default=f.default, metadata=f.metadata) for f in fields(continual.BenchmarkSettings)}  # shared with `continual`
COLUMNS = ("acc", "bwt", "activation_bytes", "strategy_bytes", "replay_bytes", "peak_step_bytes")


@dataclass
class ContinualSweepConfig:
    """The strategies and seeds of a sweep; the other settings are those of `continual`."""

    benchmark: str = FIELDS["benchmark"]
    data_path: str = FIELDS["data_path"]
    setting: str = FIELDS["setting"]
    model: str = FIELDS["model"]
    strategies: str = flag("finetune,joint,er,ewc,gpm,lance,lightcl", f"the strategies, comma-separated, among {', '.join(STRATEGIES)}")
    seeds: str = flag("0,1,2", "the seeds, comma-separated")
    epochs: int = FIELDS["epochs"]


def format_table(summary: list) -> str:
    lines = [f"{'strategy':<21}{'seeds':>6}{'ACC %':>8}{'+-':>7}{'BWT pts':>8}{'act. KiB/step':>15}{'strategy KiB':>14}{'replay KiB':>12}"
             f"{'peak MiB':>10}{'s/task':>8}"]
    for s in summary:
        lines.append(
            f"{s['strategy']:<21}{s['seeds']:>6}{s['acc']:>8.2f}{s['acc_std']:>7.2f}{s['bwt']:>+8.2f}"
            f"{s['activation_bytes'] / 1024:>15.1f}{s['strategy_bytes'] / 1024:>14.1f}{s['replay_bytes'] / 1024:>12.1f}"
            f"{s['peak_step_bytes'] / 2**20:>10.1f}{s['task_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def run(config: ContinualSweepConfig, out: str | Path, show: bool = True) -> dict:
    """Run every strategy with every seed; write `out`/results.json with the runs and the table."""
    base = continual.ContinualConfig(
        benchmark=config.benchmark, data_path=config.data_path, setting=config.setting, model=config.model, epochs=config.epochs,
    )
    strategies, rows = parse_list(config.strategies, str), []
    for strategy in strategies:
        replace(base, strategy=strategy).check()  # every name is checked before hours of work
    out = prepare_output_dir(out)
    for seed in parse_list(config.seeds, int):
        for strategy in strategies:
            result = continual.run(replace(base, strategy=strategy, seed=seed), out / f"seed{seed}" / strategy, show=False)
            rows.append(dict(seed=seed, strategy=strategy, task_seconds=float(np.mean(result["task_seconds"])),
                             **{k: result[k] for k in COLUMNS}))
            if show:
                print(f"seed {seed} {strategy:<9} ACC {result['acc']:.2f}% BWT {result['bwt']:+.2f} points", flush=True)
    summary = summarise(rows, ("strategy",), (*COLUMNS, "task_seconds"), "acc")
    results = dict(command="continual-sweep", config=asdict(config), runs=rows, summary=summary, table=format_table(summary))
    save_results(out, results)
    return results
