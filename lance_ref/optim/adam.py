"""Adam and AdamW with torch's bias correction, optional AMSGrad (specs/optim.md#adam)."""

from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, check_number


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start <- start + weight * (end - start) in place, evaluated as torch's lerp_."""
    if weight < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


class Adam(Optimizer):
    """torch.optim.Adam (specs/optim.md#adam):
    g = g + wd * p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2; (AMSGrad: v_max = max(v_max, v));
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    decoupled_weight_decay = False

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def validate(self, group: dict) -> None:
        for name in ("lr", "eps", "weight_decay"):
            check_number(group[name], name)
        if len(group["betas"]) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {group['betas']!r}")
        for i, beta in enumerate(group["betas"]):
            check_number(beta, f"betas[{i}]", 0.0, 1.0)

    def update(self, param, grad, group, state) -> None:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(param.data)
        if self.decoupled_weight_decay:
            param.data *= 1 - lr * weight_decay
        elif weight_decay != 0:
            grad = grad + weight_decay * param.data
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        step_size = lr / (1 - beta1 ** state["step"])
        denom = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** state["step"]) + group["eps"]
        param.data -= step_size * exp_avg / denom


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p = p * (1 - lr * wd) before the
    Adam step and no L2 term in the gradient (specs/optim.md#adamw)."""

    decoupled_weight_decay = True

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
