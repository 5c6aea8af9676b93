"""The hypothesis strategies and the comparison shared by the tests: arrays in any memory layout,
shapes, conv cases (with grouped channels and window geometry), and the norm-wise relative error."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

LAYOUTS = ("contiguous", "transposed", "sliced", "reversed", "mixed")


def in_layout(draw, values: np.ndarray) -> np.ndarray:
    """`values` stored in a drawn axis order (so possibly transposed) and viewed with drawn steps
    per axis: 1, sliced (2, 3), reversed (-1) or both (-2, -3)."""
    ndim, dtype = values.ndim, values.dtype
    kind = draw(st.sampled_from(LAYOUTS))
    order, steps = list(range(ndim)), [1] * ndim
    if kind in ("transposed", "mixed"):
        order = draw(st.permutations(range(ndim)))
    if kind == "sliced":
        steps = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=ndim, max_size=ndim))
    elif kind == "reversed":
        steps = draw(st.lists(st.sampled_from([1, -1]), min_size=ndim, max_size=ndim))
    elif kind == "mixed":
        steps = draw(st.lists(st.sampled_from([1, 2, 3, -1, -2, -3]), min_size=ndim, max_size=ndim))
    store = np.zeros([values.shape[a] * abs(steps[a]) for a in order], dtype=dtype)
    view = store.transpose(np.argsort(order))[tuple(slice(None, None, s) for s in steps)]
    view[...] = values
    assert view.shape == values.shape and view.dtype == dtype
    return view


@st.composite
def arrays(draw, shape, dtype=np.float64, low=-2.0, high=2.0, layouts=True):
    """Uniform values in [low, high) of `shape`, in a drawn memory layout unless `layouts` is False."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(low, high, size=tuple(shape)).astype(dtype)
    return in_layout(draw, values) if layouts and values.ndim else values


@st.composite
def normal_arrays(draw, shape, dtype):
    """Standard normal values of `shape` in a drawn memory layout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return in_layout(draw, rng.standard_normal(tuple(shape)).astype(dtype))


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)



@st.composite
def grouped_channels(draw, max_channels, general_groups):
    """(groups, in_channels, out_channels) of a conv: one group, depthwise (out a multiple of
    in) or a general grouping with a group count drawn from `general_groups`."""
    kind = draw(st.sampled_from(["one", "depthwise", "general"]))
    if kind == "one":
        return 1, draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    if kind == "depthwise":
        c = draw(st.integers(1, max_channels))
        return c, c, c * draw(st.integers(1, 2))
    groups = draw(st.sampled_from(general_groups))
    return groups, groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))


@st.composite
def windows(draw, min_side=1, max_side=None):
    """Per dimension a kernel 1-3, stride 1-3, padding 0-2, dilation 1-2 and an input side giving
    >= 1 output, from max(min_side, d (k - 1) + 1 - 2 p) up to `max_side` (d (k - 1) + 3 if None):
    (kernel, stride, padding, dilation, size), each a pair."""
    kernel, stride, padding, dilation, size = [], [], [], [], []
    for _ in range(2):
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        p, d = draw(st.integers(0, 2)), draw(st.integers(1, 2))
        kernel.append(k), stride.append(s), padding.append(p), dilation.append(d)
        size.append(draw(st.integers(max(min_side, d * (k - 1) + 1 - 2 * p), max_side or d * (k - 1) + 3)))
    return tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), tuple(size)


@st.composite
def conv_case(draw, max_channels=3, general_groups=(2,), max_batch=2, min_side=1, max_side=None):
    """(input shape, weight shape, conv2d keywords): one group, depthwise or general grouping,
    on `windows(min_side, max_side)`."""
    groups, c, o = draw(grouped_channels(max_channels=max_channels, general_groups=list(general_groups)))
    kernel, stride, padding, dilation, size = draw(windows(min_side, max_side))
    x_shape = (draw(st.integers(1, max_batch)), c) + size
    w_shape = (o, c // groups) + kernel
    return x_shape, w_shape, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@st.composite
def kernel_conv_case(draw):
    """(x shape, kernel, stride, padding, dilation, groups) with a non-empty output, channels and
    sides around the SIMD widths (the Rust kernels' cases)."""
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    c = groups * draw(st.sampled_from([1, 2, 3, 5, 8, 9, 17]))
    n = draw(st.sampled_from([1, 2, 3]))
    h, w = draw(st.sampled_from([1, 2, 5, 7, 8, 9, 16, 17])), draw(st.sampled_from([1, 2, 5, 7, 8, 9, 16, 17, 33]))
    kernel = tuple(draw(st.tuples(st.integers(1, 5), st.integers(1, 5))))
    stride = tuple(draw(st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = tuple(draw(st.tuples(st.integers(0, 2), st.integers(0, 2))))
    dilation = tuple(draw(st.tuples(st.integers(1, 2), st.integers(1, 2))))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    # Make the padded input at least as large as the dilated kernel.
    h, w = max(h, spans[0] - 2 * padding[0]), max(w, spans[1] - 2 * padding[1])
    return (n, c, h, w), kernel, stride, padding, dilation, groups


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want||_F / ||want||_F in float64 (the absolute error when `want` is zero), after
    checking that the shapes and dtypes agree."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    got, want = got.astype(np.float64), want.astype(np.float64)
    scale, diff = np.linalg.norm(want), np.linalg.norm(got - want)
    return diff / scale if scale > 0 else diff
