"""Learning-rate schedulers with torch's update rules (specs/optim.md#schedulers).

Each scheduler writes the new rate into every parameter group's "lr"; `get_last_lr()` returns
the rates after the last `step()`. Their state dicts hold numbers, strings and arrays only.
"""

from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, check_number, npz_value, restore_like


class _Scheduler:
    """What every scheduler shares: the optimiser, the last rates and the state dict."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _set_lrs(self, lrs) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group after the last `step()`."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Every attribute but the optimiser, as .npz-storable values (lists become arrays)."""
        return {key: npz_value(value) for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict) -> None:
        expected = set(vars(self)) - {"optimizer"}
        if set(state_dict) != expected:
            raise ValueError(
                f"scheduler state_dict: missing keys {sorted(expected - set(state_dict))}, "
                f"unexpected keys {sorted(set(state_dict) - expected)}"
            )
        for key, value in state_dict.items():
            setattr(self, key, restore_like(getattr(self, key), value))


class LRScheduler(_Scheduler):
    """Epoch-based schedulers: `step()` advances `last_epoch` and sets the rates of `get_lr()`.

    As torch, construction performs the first step (last_epoch 0, the initial rates).
    """

    def __init__(self, optimizer: Optimizer):
        super().__init__(optimizer)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def get_lr(self) -> list[float]:
        """The rates for epoch `last_epoch`, computed from the current ones (torch's chainable form)."""
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self._set_lrs(self.get_lr())


class StepLR(LRScheduler):
    """lr_t = lr_0 * gamma ** floor(t / step_size) (specs/optim.md#steplr)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        check_number(gamma, "gamma")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (lr_0 - eta_min) (1 + cos(pi t / T_max)) / 2, computed recursively as
    torch does (specs/optim.md#cosineannealinglr); past T_max the cosine continues (periodic)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"T_max must be a positive int, got {T_max!r}")
        check_number(eta_min, "eta_min")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if t == 0:
            return lrs
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2 for lr, base in zip(lrs, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in lrs]


class ReduceLROnPlateau(_Scheduler):
    """Multiply the rates by `factor` (not below `min_lr`) when the metric passed to
    `step(metric)` has not improved for more than `patience` steps (specs/optim.md#reducelronplateau).

    Improvement: mode "min", threshold_mode "rel": metric < best * (1 - threshold); "abs":
    metric < best - threshold (mirrored for "max"). After a reduction, `cooldown` steps pass
    without counting bad epochs; a change smaller than `eps` is not applied.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr=0.0,
        eps: float = 1e-8,
    ):
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        check_number(factor, "factor", 0.0, 1.0)
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name, value in (("threshold", threshold), ("eps", eps)):
            check_number(value, name)
        groups = len(optimizer.param_groups)
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * groups
        if len(min_lrs) != groups:
            raise ValueError(f"min_lr must be a number or a list of {groups} numbers (one per group), got {min_lr!r}")
        for value in min_lrs:
            check_number(value, "min_lr")
        self.mode, self.factor, self.patience, self.cooldown = mode, float(factor), patience, cooldown
        self.threshold, self.threshold_mode, self.eps = float(threshold), threshold_mode, float(eps)
        self.min_lrs = [float(v) for v in min_lrs]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = 0, 0, 0

    def is_better(self, metric: float) -> bool:
        if self.mode == "min":
            bound = self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return metric < bound
        bound = self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return metric > bound

    def step(self, metric: float) -> None:
        metric = float(np.asarray(metric))
        self.last_epoch += 1
        if self.is_better(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.num_bad_epochs > self.patience:
            reduced = [max(lr * self.factor, min_lr) for lr, min_lr in zip(lrs, self.min_lrs)]
            lrs = [new if lr - new > self.eps else lr for lr, new in zip(lrs, reduced)]
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._set_lrs(lrs)
