"""The optimiser base: parameter groups, per-parameter state, npz-ready state dicts (specs/optim.md#optimizer).

As in torch, `params` is an iterable of tensors or of dicts (parameter groups, each with its
own hyperparameters), and parameters whose `.grad` is None are skipped by `step()`.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..tensor import FLOAT_DTYPES, Tensor


def check_number(value, argument: str, low: float = 0.0, high: float | None = None) -> None:
    """Raise unless `value` is a real number in [low, high) (in [low, inf) without `high`)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__}")
    if value < low or (high is not None and value >= high):
        rule = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{argument} must be {rule}, got {value}")


def restore_like(current, saved):
    """`saved`, possibly read back from an .npz, as a plain Python value: a tuple or list of
    floats when `current` is one, else a 0-d array becomes the number or string it holds."""
    if isinstance(current, (tuple, list)):
        return type(current)(float(v) for v in np.asarray(saved).ravel())
    return saved.item() if isinstance(saved, (np.ndarray, np.generic)) and np.ndim(saved) == 0 else saved


def npz_value(value):
    """A hyperparameter as an .npz-storable value: numbers and strings as they are, sequences as arrays."""
    return np.asarray(value, dtype=np.float64) if isinstance(value, (tuple, list)) else value


class Optimizer:
    """Holds `param_groups` (dicts with "params" and hyperparameters) and `state` (per parameter).

    Subclasses define `defaults`-checking `validate(group)` and `update(param, grad, group, state)`.
    """

    def __init__(self, params, defaults: dict):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a single Tensor")
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list[dict] = []
        groups = list(params)
        if not groups:
            raise ValueError("params is empty: the optimizer got no parameters")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def validate(self, group: dict) -> None:
        """Raise ValueError/TypeError naming a hyperparameter of `group` that is out of range."""

    def update(self, param: Tensor, grad: np.ndarray, group: dict, state: dict) -> None:
        """Change `param.data` in place from `grad`; `state` is this parameter's state dict."""
        raise NotImplementedError

    def add_param_group(self, group: dict) -> None:
        """Add a group: its "params" plus hyperparameters, missing ones taken from `defaults`."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        params = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"params must hold Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("cannot optimise a non-leaf Tensor (one computed by an op)")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) < len(params) or any(id(p) in seen for p in params):
            raise ValueError("a parameter appears more than once in the parameter groups")
        full = {"params": params, **self.defaults}
        full.update((k, v) for k, v in group.items() if k != "params")
        self.validate(full)
        self.param_groups.append(full)

    def zero_grad(self) -> None:
        """Set the `.grad` of every parameter to None (torch's default, set_to_none=True)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient (specs/optim.md)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad, group, self.state.setdefault(p, {}))
                    if getattr(p, "after_update", None) is not None:
                        p.after_update()

    # --- state dicts -----------------------------------------------------------------------
    def _all_params(self) -> list:
        """Every parameter in group order; its position is its index in a state dict, as torch."""
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """A flat dict of numbers and arrays, ready for `np.savez` (specs/optim.md#state-dict):
        "param_groups.<g>.<hyperparameter>", "param_groups.<g>.params" (parameter indices) and
        "state.<i>.<name>" (copies of the per-parameter state)."""
        out, start = {}, 0
        for g, group in enumerate(self.param_groups):
            for key, value in group.items():
                if key != "params":
                    out[f"param_groups.{g}.{key}"] = npz_value(value)
            out[f"param_groups.{g}.params"] = np.arange(start, start + len(group["params"]), dtype=np.int64)
            start += len(group["params"])
        for i, p in enumerate(self._all_params()):
            for key, value in self.state.get(p, {}).items():
                out[f"state.{i}.{key}"] = value.copy() if isinstance(value, np.ndarray) else value
        return out

    def load_state_dict(self, state_dict) -> None:
        """Restore hyperparameters and per-parameter state from `state_dict()`'s output (or
        its .npz round trip). Everything is checked before anything changes; state arrays are
        cast to their parameter's dtype, as torch does."""
        params = self._all_params()
        groups = [{} for _ in self.param_groups]
        states: dict[int, dict] = {}
        for key, value in state_dict.items():
            kind, _, rest = key.partition(".")
            index, _, name = rest.partition(".")
            limit = len(groups) if kind == "param_groups" else len(params)
            if kind not in ("param_groups", "state") or not index.isdigit() or int(index) >= limit or not name:
                raise ValueError(f"unexpected key {key!r} in the optimizer state_dict")
            if kind == "param_groups":
                groups[int(index)][name] = value
            else:
                states.setdefault(int(index), {})[name] = _restore_state(key, value, params[int(index)])
        restored = []
        for g, (group, saved) in enumerate(zip(self.param_groups, groups)):
            if set(saved) != set(group):
                raise ValueError(
                    f"parameter group {g}: missing keys {sorted(set(group) - set(saved))}, "
                    f"unexpected keys {sorted(set(saved) - set(group))}"
                )
            count = np.asarray(saved["params"]).size
            if count != len(group["params"]):
                raise ValueError(
                    f"parameter group {g} holds {len(group['params'])} parameters, the state_dict's {count}"
                )
            new = {k: (v if k == "params" else restore_like(v, saved[k])) for k, v in group.items()}
            self.validate(new)
            restored.append(new)
        self.param_groups = restored
        self.state = {params[i]: state for i, state in states.items()}


def _restore_state(key: str, value, param: Tensor):
    """A number, or a float array of the parameter's shape cast to its dtype."""
    value = np.asarray(value)
    if value.ndim == 0:
        return value.item()
    if value.dtype not in FLOAT_DTYPES or value.shape != param.shape:
        raise ValueError(
            f"{key!r} must be a float array of shape {param.shape} (its parameter's), got {value.dtype} {value.shape}"
        )
    return value.astype(param.dtype, copy=True)
