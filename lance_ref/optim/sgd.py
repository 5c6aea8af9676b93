"""Stochastic gradient descent with momentum, dampening, Nesterov, L2 weight decay and
maximisation (specs/optim.md#sgd)."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    """torch.optim.SGD (specs/optim.md#sgd): g -> -g when maximising;
    d = g + wd * p; b = d at the first step, else b = mu * b + (1 - dampening) * d;
    d = d + mu * b (Nesterov) or d = b (when mu != 0); p = p - lr * d.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
        nesterov: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize)
        super().__init__(params, defaults)

    def validate(self, group: dict) -> None:
        for name in ("lr", "momentum", "weight_decay"):
            check_number(group[name], name)
        if not isinstance(group["maximize"], (bool, np.bool_)):
            raise TypeError(f"maximize must be a bool, got {type(group['maximize']).__name__}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")

    def update(self, param, grad, group, state) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        grad = -grad if group["maximize"] else grad
        d = grad + weight_decay * param.data if weight_decay != 0 else grad
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = d.copy()
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * d
            d = d + momentum * buffer if group["nesterov"] else buffer
        param.data -= lr * d
