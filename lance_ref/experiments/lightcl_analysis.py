"""`lance-ref lightcl-analysis`: the layer-wise analysis that motivates LightCL's freezing point
(specs/continual.md#layer-wise-analysis).

A model learns task 1 of a benchmark (tasks counted from 1, as the console shows them). From
that state, task 2 is learned once with every layer training, and once per weight layer l with
every parameter up to l frozen. Per layer:
- plasticity: task 2's test accuracy (%) with the layers up to l frozen, relative to training everything;
- stability: linear CKA of l's outputs on task 1's test images, before and after learning task 2
  with every layer training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..continual import Finetune, head_names, load_benchmark, protected_layers
from ..continual.lightcl import freeze_before
from ..continual.loop import normalizer, train_task
from ..continual.metrics import linear_cka
from ..continual.steps import evaluate
from ..continual.strategies import forward_task
from ..io import prepare_output_dir
from ..nn import layer_activations
from ..train import in_percent
from .continual import BenchmarkSettings, ContinualConfig, build
from .report import save_results


@dataclass
class AnalysisConfig(BenchmarkSettings):
    """The benchmark, model and training of the analysis; as in `continual`."""


def format_table(rows: list) -> str:
    lines = [f"{'frozen up to':<16}{'task-2 accuracy %':>18}{'plasticity':>12}{'stability (CKA)':>17}"]
    for r in rows:
        stability = "" if r["stability"] is None else f"{r['stability']:.4f}"
        lines.append(f"{r['layer']:<16}{r['accuracy']:>18.2f}{r['plasticity']:>12.4f}{stability:>17}")
    return "\n".join(lines)


def run(config: AnalysisConfig, out: str | Path, show: bool = True) -> dict:
    """Run the analysis; write `out`/results.json; return the results."""
    settings = ContinualConfig(strategy="finetune", **asdict(config))
    settings.check()
    out = prepare_output_dir(out)
    scenario = load_benchmark(config.benchmark, config.seed, config.data_path).shortened(config.tasks, config.train_per_class)
    if len(scenario.tasks) < 2:
        raise ValueError(f"{config.benchmark} has a single task; the analysis needs two")
    old, new = scenario.tasks[:2]
    normalize = normalizer(scenario, config.dtype)

    def learn_new_task(model) -> float:
        train_task(model, Finetune(model, scenario, settings), new, settings, normalize, show)
        return in_percent(evaluate(model, [new], config.setting, normalize, np.random.default_rng((config.seed, 1, 4)))[0])

    model = build(settings, scenario)
    train_task(model, Finetune(model, scenario, settings), old, settings, normalize, show)
    learned_old, weight_layers = model.state_dict(), protected_layers(model)
    old_images, old_head = normalize(old.test.images), forward_task(old, config.setting)
    before = layer_activations(model, weight_layers, old_images, kind="output", **old_head)
    everything = learn_new_task(model)
    after = layer_activations(model, weight_layers, old_images, kind="output", **old_head)
    layers = list(weight_layers)
    rows = [dict(layer="(none)", accuracy=everything, plasticity=1.0, stability=None)]
    heads = head_names(model)[0].split(".")[0]  # the heads' container
    for i, layer in enumerate(layers):
        model = build(settings, scenario)
        model.load_state_dict(learned_old)
        freeze_before(model, layers[i + 1] if i + 1 < len(layers) else heads)
        accuracy = learn_new_task(model)
        rows.append(dict(layer=layer, accuracy=accuracy, plasticity=accuracy / everything, stability=linear_cka(before[layer], after[layer])))
        if show:
            print(f"frozen up to {layer}: task-2 test accuracy {accuracy:.2f}%", flush=True)
    results = dict(command="lightcl-analysis", config=asdict(config), tasks=[list(old.classes), list(new.classes)], rows=rows, table=format_table(rows))
    save_results(out, results)
    return results
