"""`lance-ref continual`: a continual-learning benchmark with one strategy (specs/continual.md).

Split-MNIST (the bundled digits, 5 tasks of 2 classes) or Split CIFAR-10/100 from
`--data-path`; task-incremental (a head per task, GPM's protocol) or class-incremental (one
shared head). Writes `results.json` (the accuracy matrix, ACC, BWT, forgetting, memory, time)
and, with the `plot` extra, `accuracy_matrix.png`. `--resume` continues an interrupted run
from the checkpoint written after its last finished task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import random
from ..continual import BENCHMARKS, STRATEGIES, load_benchmark, make_strategy, run_tasks
from ..continual.metrics import average_accuracy, backward_transfer, forgetting, ragged
from ..binary import check_bits, set_precision
from ..continual.scenario import check_setting
from ..continual.layers import head_names
from ..io import prepare_output_dir
from ..options import check_counts, flag, flat_config
from ..nn import build_model
from ..tensor import float_dtype
from ..train import in_percent
from .report import pyplot, save_figure, save_results
from .supervised import DTYPE_HELP, start_from_weights


MODELS = ("alexnet-gpm", "resnet18-reduced", "binary-cnn")  # the zoo's models with task heads (binary-cnn: one shared head)


@dataclass
class BenchmarkSettings:
    """The benchmark, model and training of a continual run (and of `lightcl-analysis`)."""

    benchmark: str = flag("split-mnist", f"the tasks: {', '.join(BENCHMARKS)} (split-mnist: the bundled digits, "
                          "5 tasks of 2 classes; the CIFAR ones read --data-path)")
    data_path: str = flag("", "the CIFAR-10/100 binary or python release (a directory or its archive)")
    setting: str = flag("task", "task (a head per task, GPM's protocol) or class (one shared head)")
    model: str = flag("alexnet-gpm", f"the zoo model: {', '.join(MODELS)}")
    epochs: int = flag(5, "passes over each task's training data")
    batch_size: int = flag(64, "samples per SGD step (besides replayed ones)")
    lr: float = flag(0.01, "SGD's learning rate (constant, no momentum)")
    seed: int = flag(0, "seed of the class order and of every random draw")
    dtype: str = flag("float32", DTYPE_HELP)
    tasks: int = flag(0, "learn only the benchmark's first N tasks (0: all); for quick runs")
    train_per_class: int = flag(0, "train on the first N samples of each class only (0: all); for quick runs")


@dataclass
class RunSettings(BenchmarkSettings):
    """A continual run's choices besides its strategy's options."""

    strategy: str = flag("finetune", f"how the tasks are learnt: {', '.join(STRATEGIES)} (specs/continual.md#strategies)")
    shuffle_classes: bool = flag(True, "split the classes in the seed's random order (no: in their natural order)")
    forward_bits: int = flag(8, "binary-cnn: the bits of its quantised weights and activations, 1..32")
    backward_bits: int = flag(16, "binary-cnn: the bits of its quantised gradients, 1..32")
    weights: str = flag("", "start from a torch state_dict saved as a flat .npz (heads that do not fit stay fresh)")
    cast_weights: bool = flag(False, "convert float32 weights to a float64 model, or float64 to float32")
    resume: bool = flag(False, "continue from the checkpoint of --out's last finished task (same settings only)")
    keep_checkpoint: bool = flag(False, "keep checkpoint.npz once every task is learnt (it is removed otherwise)")

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; available: {sorted(STRATEGIES)}")
        check_setting(self.setting)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS} (the zoo's models with task heads), got {self.model!r}")
        if self.model == "binary-cnn" and self.setting != "class":
            raise ValueError("binary-cnn has one shared head: it runs class-incremental (setting 'class')")
        check_bits(self.forward_bits, "forward_bits")
        check_bits(self.backward_bits, "backward_bits")
        check_counts(self, "epochs", "batch_size")
        if self.tasks < 0 or self.train_per_class < 0:
            raise ValueError(f"tasks and train_per_class must be >= 0 (0: all), got {self.tasks} and {self.train_per_class}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"weights file {self.weights} does not exist")
        float_dtype(self.dtype, "dtype")
        STRATEGIES[self.strategy].Options.of(self)  # checks the strategy's options


ContinualConfig = flat_config(
    "ContinualConfig", RunSettings, [strategy.Options for strategy in STRATEGIES.values()],
    "Every choice of a continual-learning run, stored in results.json: `RunSettings` and every "
    "registered strategy's options (a strategy reads its own).",
)


MAY_CHANGE_ON_RESUME = ("data_path", "resume", "keep_checkpoint")  # where the data lies; what to do with the checkpoint


def run_identity(config: ContinualConfig) -> dict:
    """The settings that define a run's tasks and training, stored in its checkpoint: every
    setting but MAY_CHANGE_ON_RESUME and the options of the strategies it does not run."""
    own = {f.name for f in fields(RunSettings)} | {f.name for f in fields(STRATEGIES[config.strategy].Options)}
    return {name: value for name, value in asdict(config).items() if name in own and name not in MAY_CHANGE_ON_RESUME}


def build(config: ContinualConfig, scenario):
    """The zoo model with a head per task or one shared head, initialised from the seed, its
    quantised layers (if any) training at `forward_bits` / `backward_bits`."""
    random.manual_seed(config.seed)
    first = scenario.tasks[0].train
    model = build_model(
        config.model, num_classes=scenario.num_classes, in_channels=first.images.shape[1],
        image_size=first.images.shape[2], heads=scenario.head_sizes(config.setting), dtype=np.dtype(config.dtype),
    )
    set_precision(model, config.forward_bits, config.backward_bits)  # binary-cnn's quantised training; others have none
    return model


def plot_matrix(percent: np.ndarray, title: str, path: Path) -> None:
    """The accuracy matrix (in percent) as a heatmap, tasks numbered from 1 as the console does."""
    plt = pyplot()
    if plt is None:
        return
    count = len(percent)
    shown = np.where(np.tril(np.ones_like(percent, dtype=bool)), percent, np.nan)
    figure, axes = plt.subplots(figsize=(5, 4.4))
    image = axes.imshow(shown, vmin=0, vmax=100, cmap="viridis")
    for (i, j), value in np.ndenumerate(shown):
        if np.isfinite(value):
            axes.text(j, i, f"{value:.0f}", ha="center", va="center", color="w" if value < 60 else "k", fontsize=8)
    ticks, labels = range(count), [str(t + 1) for t in range(count)]
    axes.set(xticks=ticks, xticklabels=labels, yticks=ticks, yticklabels=labels, xlabel="task tested",
             ylabel="after learning task")
    axes.set_title(title, fontsize=9, wrap=True)
    figure.colorbar(image, label="test accuracy (%)")
    figure.tight_layout()
    save_figure(figure, path)


def run(config: ContinualConfig, out: str | Path, show: bool = True) -> dict:
    """Run per `config`; write `out`/results.json (and the heatmap); return the results."""
    config.check()
    out = prepare_output_dir(out)
    scenario = load_benchmark(config.benchmark, config.seed if config.shuffle_classes else None, config.data_path)
    scenario = scenario.shortened(config.tasks, config.train_per_class)
    model = build(config, scenario)
    if config.weights:
        start_from_weights(model, config.weights, config.cast_weights, head_names(model), show)
    strategy = make_strategy(config.strategy, model, scenario, config)
    outcome = run_tasks(model, scenario, strategy, config, out, show, config.resume, run_identity(config), config.keep_checkpoint)
    matrix = outcome["accuracy_matrix"]
    later = min(1, len(matrix) - 1)  # task 0 trains by full backprop in every strategy; they differ from task 1 on
    results = dict(
        command="continual",
        config=asdict(config),
        class_order=list(scenario.class_order),
        tasks=[list(t.classes) for t in scenario.tasks],
        accuracy_matrix=[in_percent(row) for row in ragged(matrix)],
        acc=in_percent(average_accuracy(matrix)),
        bwt=in_percent(backward_transfer(matrix)),
        forgetting=in_percent(forgetting(matrix)),
        activation_bytes=int(outcome["activation_bytes"][later:, 0].max()),
        activation_bytes_all_ops=int(outcome["activation_bytes"][later:, 1].max()),
        activation_bytes_by_task=outcome["activation_bytes"][:, 0].tolist(),
        activation_bytes_all_ops_by_task=outcome["activation_bytes"][:, 1].tolist(),
        peak_step_bytes=int(outcome["peak_step_bytes"][later:].max()),
        peak_step_bytes_by_task=outcome["peak_step_bytes"].tolist(),
        persistent_bytes=int(outcome["persistent_bytes"][later:].max()),
        persistent_bytes_by_task=outcome["persistent_bytes"].tolist(),
        strategy_bytes=strategy.kept_bytes(),
        replay_bytes=strategy.replay_bytes(),
        trainable_parameters=int(outcome["trainable_parameters"][later:].max()),
        trainable_parameters_by_task=outcome["trainable_parameters"].tolist(),
        task_seconds=outcome["task_seconds"].tolist(),
    )
    save_results(out, results)
    title = f"{config.strategy} on {config.benchmark}, {config.model}\n{config.setting}-incremental, seed {config.seed}"
    plot_matrix(100 * matrix, title, out / "accuracy_matrix.png")
    return results
