"""Batch normalisation with torch's running statistics (specs/norm.md)."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..tensor import Function, Tensor


class BatchNorm(Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, per channel of axis 1 (specs/norm.md#batch_norm).

    `mean`, `var` are the batch's statistics (biased var) when `use_batch_stats`, so the VJP
    differentiates through them; otherwise they are running statistics, constants.
    `weight`/`bias` may be absent (affine=False). Saves the per-channel scale gamma / sqrt(var + eps),
    and x_hat only where the VJP needs it: with batch statistics, or for a weight gradient.
    """

    def forward(self, x, weight=None, bias=None, *, mean, var, eps, use_batch_stats):
        inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
        need_w = len(self.needs_input_grad) > 1 and self.needs_input_grad[1]
        self.use_batch_stats = use_batch_stats
        x_hat, y = kernels.batch_norm_forward(x, mean, inv_std, weight, bias, keep_x_hat=use_batch_stats or need_w)
        self.save(x_hat, inv_std if weight is None else inv_std * weight)
        return y

    def backward(self, grad):
        x_hat, scale = self.saved_arrays
        grad_x, (grad_weight, grad_bias) = kernels.batch_norm_backward(grad, x_hat, scale, self.use_batch_stats)
        return grad_x, (None if x_hat is None else grad_weight), grad_bias


def batch_norm(
    input,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
):
    """torch.nn.functional.batch_norm over axis 1 of (N, C, *) inputs.

    In training the batch statistics normalise and the running ones are updated in place:
    r <- (1 - momentum) r + momentum * s, with the unbiased batch variance for `running_var`.
    """
    x = input.data if isinstance(input, Tensor) else np.asarray(input)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, *), got {x.shape}")
    channels = x.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if v is not None and v.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},), got {v.shape}")
        if v is not None and v.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {v.dtype} but the input has dtype {x.dtype}")
    if training:
        count = x.size // channels
        if count <= 1:
            raise ValueError(
                f"batch_norm in training needs more than 1 value per channel, got input {x.shape}"
            )
        mean, var = kernels.batch_norm_stats(x)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    else:
        mean, var = running_mean, running_var
    params = [p for p in (weight, bias) if p is not None]
    if len(params) == 1 and weight is None:
        raise ValueError("batch_norm with a bias needs a weight (affine=True has both)")
    return BatchNorm.apply(
        input,
        *params,
        mean=mean,
        var=var,
        eps=eps,
        use_batch_stats=training,
    )
