"""Continual learning: class-split scenarios, the accuracy-matrix metrics, strategies (finetune,
joint, er, ewc, gpm, lance, lightcl, and latent replay: float-latent-replay, binary-latent-replay,
cwr) and the task-by-task loop (specs/continual.md, specs/binary.md)."""

from .gpm import extend_memory, project_out
from .layers import head_names, patch_rows, protected_layers
from .loop import run_tasks
from .metrics import average_accuracy, backward_transfer, forgetting
from .replay import ClassBalancedReservoir
from .scenario import BENCHMARKS, SETTINGS, Scenario, Task, load_benchmark, make_scenario, split_classes
# Imported in the order the strategies register, the order of STRATEGIES and of the CLI's flags.
from .strategies import EWC, GPM, STRATEGIES, ExperienceReplay, Finetune, Joint, ProtectedMemory, Strategy, register
from .lance_cl import LanceCL, ProtectedBases, complement_basis
from .lightcl import LightCL
from .latent_replay import BinaryLatentReplay, CWRStar, LatentReplay


def make_strategy(name: str, model, scenario, config):
    """The strategy `name` (a key of STRATEGIES) for `model` on `scenario`: its benchmark settings
    and its options read from `config`, a flat config holding both (`ContinualConfig`)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; available: {sorted(STRATEGIES)}")
    strategy = STRATEGIES[name]
    return strategy(model, scenario, config, strategy.Options.of(config))

__all__ = [
    "BENCHMARKS", "BinaryLatentReplay", "CWRStar", "EWC", "GPM", "SETTINGS", "STRATEGIES", "ClassBalancedReservoir", "ExperienceReplay", "Finetune",
    "Joint", "LanceCL", "LatentReplay", "LightCL", "ProtectedBases", "ProtectedMemory", "Strategy", "Scenario", "Task", "average_accuracy", "backward_transfer",
    "complement_basis", "extend_memory", "forgetting", "head_names", "load_benchmark", "make_scenario",
    "make_strategy", "patch_rows", "project_out", "protected_layers", "register", "run_tasks", "split_classes",
]
