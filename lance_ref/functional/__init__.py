"""Differentiable ops with torch.nn.functional's names and semantics.

Each op is a `Function` whose forward and VJP sit side by side in the module of its family;
`specs/<family>.md` gives the equations. Importing this package also gives `Tensor` its
operators and methods (`a + b`, `x.sum()`, `x.reshape(...)`, ...).
"""

from ..tensor import Tensor
from .activation import dropout, leaky_relu, relu, relu6, sigmoid, tanh
from .conv import conv2d
from .elementwise import abs, add, clamp, div, exp, log, mul, neg, pow, sqrt, sub
from .linear import linear, matmul
from .loss import cross_entropy, log_softmax, mse_loss, nll_loss, softmax
from .norm import batch_norm
from .pool import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from .reduce import amax, mean, sum, var
from .shape import (
    broadcast_to,
    cat,
    flatten,
    getitem,
    pad,
    permute,
    reshape,
    squeeze,
    stack,
    transpose,
    unsqueeze,
)


def _reflected(op):
    return lambda self, other: op(other, self)


_TENSOR_METHODS = {
    "__add__": add,
    "__radd__": _reflected(add),
    "__sub__": sub,
    "__rsub__": _reflected(sub),
    "__mul__": mul,
    "__rmul__": _reflected(mul),
    "__truediv__": div,
    "__rtruediv__": _reflected(div),
    "__matmul__": matmul,
    "__rmatmul__": _reflected(matmul),
    "__neg__": neg,
    "__pow__": pow,
    "__getitem__": getitem,
    "abs": abs,
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "clamp": clamp,
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "sum": sum,
    "mean": mean,
    "amax": amax,
    "var": var,
    "reshape": reshape,
    "view": reshape,
    "flatten": flatten,
    "permute": permute,
    "transpose": transpose,
    "unsqueeze": unsqueeze,
    "squeeze": squeeze,
    "log_softmax": log_softmax,
    "softmax": softmax,
}
for _name, _op in _TENSOR_METHODS.items():
    setattr(Tensor, _name, _op)
