"""Batch normalisation with torch's running statistics (specs/norm.md)."""

from __future__ import annotations

import numpy as np

from ..tensor import Function, Tensor


def _channel_view(v, ndim):
    """A per-channel vector shaped to broadcast over (N, C, *)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


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
        x_hat = x - _channel_view(mean, x.ndim)
        x_hat *= _channel_view(inv_std, x.ndim)
        keep_x_hat = use_batch_stats or need_w
        self.save(x_hat if keep_x_hat else None, inv_std if weight is None else inv_std * weight)
        y = x_hat * _channel_view(weight, x.ndim) if weight is not None and keep_x_hat else x_hat
        if weight is not None and not keep_x_hat:
            y *= _channel_view(weight, x.ndim)  # x_hat is not kept: scale it in place
        if bias is not None:
            y += _channel_view(bias, x.ndim)
        return y

    def backward(self, grad):
        x_hat, scale = self.saved_arrays
        ndim, axes = grad.ndim, _reduced_axes(grad.ndim)
        grad_weight = (grad * x_hat).sum(axis=axes) if x_hat is not None else None
        grad_bias = grad.sum(axis=axes)
        if self.use_batch_stats:
            count = grad.size // grad.shape[1]
            grad_x = _channel_view(scale, ndim) * (
                grad
                - _channel_view(grad_bias / count, ndim)
                - x_hat * _channel_view(grad_weight / count, ndim)
            )
        else:
            grad_x = grad * _channel_view(scale, ndim)
        return grad_x, grad_weight, grad_bias


def _reduced_axes(ndim: int) -> tuple:
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


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
    channels, axes = x.shape[1], _reduced_axes(x.ndim)
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
        mean = x.mean(axis=axes)
        centred = x - _channel_view(mean, x.ndim)
        var = np.square(centred, out=centred).mean(axis=axes)
        del centred
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
