"""Continual learning: class-split scenarios, the accuracy-matrix metrics, strategies (finetune,
joint, er, ewc, gpm) and the task-by-task loop (specs/continual.md)."""

from .gpm import extend_memory, project_out
from .layers import head_names, patch_rows, protected_layers
from .loop import run_tasks
from .metrics import average_accuracy, backward_transfer, forgetting
from .replay import ClassBalancedReservoir
from .scenario import BENCHMARKS, SETTINGS, Scenario, Task, load_benchmark, make_scenario, split_classes
from .strategies import STRATEGIES, make_strategy

__all__ = [
    "BENCHMARKS", "SETTINGS", "STRATEGIES", "ClassBalancedReservoir", "Scenario", "Task", "average_accuracy",
    "backward_transfer", "extend_memory", "forgetting", "head_names", "load_benchmark", "make_scenario",
    "make_strategy", "patch_rows", "project_out", "protected_layers", "run_tasks", "split_classes",
]
