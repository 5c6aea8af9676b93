"""Which conv output channels may update under a parameter budget (specs/selection.md#budget).

Every conv output channel is a neuron costing its own parameters: C_in / groups * kh * kw
weights (kh * kw for a depthwise channel) plus its bias. A policy orders the neurons and keeps
the longest prefix of that order whose summed cost fits the budget.
"""

from __future__ import annotations

import numbers

import numpy as np

POLICIES = ("neq", "random", "su", "full")


def conv_neurons(layers: dict) -> dict:
    """name -> per-output-channel parameter costs of each conv layer of `layers` (name -> a
    Conv2d or a layer wrapping one: 4-d `weight`, optional `bias`)."""
    if not layers:
        raise ValueError("there is no conv layer to select neurons from")
    costs = {}
    for name, layer in layers.items():
        out_channels, per_channel = layer.weight.shape[0], int(np.prod(layer.weight.shape[1:]))
        costs[name] = np.full(out_channels, per_channel + (layer.bias is not None), dtype=np.int64)
    return costs


def parse_budget(text: str):
    """"0.1" -> a ratio 0.1; "5000" -> a count of 5000 parameters (an integer literal is a count)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"budget must be a ratio like '0.1' or a parameter count like '5000', got {text!r}")


def budget_parameters(budget, costs: np.ndarray) -> int:
    """The budget in parameters: a ratio in (0, 1] of all conv parameters, or an int count; it
    must afford the cheapest neuron and not exceed the total."""
    total = int(costs.sum())
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"budget must be a ratio in (0, 1] or a parameter count, got {budget!r}")
    if isinstance(budget, numbers.Integral):
        count = int(budget)
    elif 0 < budget <= 1:
        count = int(np.floor(float(budget) * total))
    else:
        raise ValueError(f"a fractional budget must lie in (0, 1], got {budget}")
    cheapest = int(costs.min())
    if isinstance(budget, numbers.Integral) and not cheapest <= count <= total:
        raise ValueError(
            f"budget {budget} is a count of parameters (a ratio has a decimal point: 1.0 is all of them); "
            f"it must lie between the cheapest neuron's {cheapest} and all {total} conv parameters"
        )
    if count < cheapest:
        raise ValueError(f"budget {budget} is {count} of the {total} conv parameters, fewer than the cheapest neuron's {cheapest}")
    return count


def greedy_prefix(order: np.ndarray, costs: np.ndarray, budget: int) -> np.ndarray:
    """Mask of the neurons of the longest prefix of `order` whose summed cost is <= `budget`."""
    fits = np.cumsum(costs[order]) <= budget
    chosen = order[: int(np.argmin(fits)) if not fits.all() else len(order)]
    mask = np.zeros(len(costs), dtype=bool)
    mask[chosen] = True
    return mask


def select(policy: str, costs: np.ndarray, budget: int, velocity=None, norms=None, rng=None) -> np.ndarray:
    """The mask of neurons that update: `neq` by |v| / cost, `random` in `rng`'s shuffled order,
    `su` by weight L2 norm (static), each the greedy prefix of its order; `full` all neurons.
    Ties keep the neuron order."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; available: {POLICIES}")
    needed = {"neq": ("velocity", velocity), "su": ("norms", norms), "random": ("rng", rng)}.get(policy)
    if needed is not None and needed[1] is None:
        raise ValueError(f"policy {policy!r} needs {needed[0]}")
    if policy == "full":
        return np.ones(len(costs), dtype=bool)
    if policy == "neq":
        order = np.argsort(-np.abs(velocity) / costs, kind="stable")
    elif policy == "su":
        order = np.argsort(-np.asarray(norms, dtype=np.float64), kind="stable")
    else:
        order = rng.permutation(len(costs))
    return greedy_prefix(order, costs, budget)
