"""The workspace budget: how many bytes an op's temporary unfoldings may take at once
(specs/memory.md#workspace).

An ordinary convolution unfolds its input (im2col) and multiplies the unfolding; over a whole
batch that copy is kh*kw times the input. Ops that unfold take their batch in chunks of samples
whose unfolding and its product fit the budget, so a step's transients stay bounded whatever
the batch. The budget is `LANCE_REF_WORKSPACE_BYTES` (read once, at import) or
`set_workspace_bytes`; the default is 32 MiB.
"""

from __future__ import annotations

import numbers
import os

WORKSPACE_ENV = "LANCE_REF_WORKSPACE_BYTES"
DEFAULT_WORKSPACE_BYTES = 32 * 1024 * 1024


def check_workspace_bytes(value, name: str = "workspace_bytes") -> int:
    """`value` as an int, after checking it is a positive integer number of bytes."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a positive integer number of bytes, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer number of bytes, got {value!r}")
    return int(value)


_budget = check_workspace_bytes(os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE_BYTES), WORKSPACE_ENV)


def workspace_bytes() -> int:
    """The current workspace budget in bytes."""
    return _budget


def set_workspace_bytes(value) -> int:
    """Set the workspace budget (a positive int of bytes) for every later op; returns the
    previous budget. A budget below one sample's unfolding processes one sample at a time."""
    global _budget
    previous, _budget = _budget, check_workspace_bytes(value)
    return previous


def padding_bytes() -> int:
    """What the Rust convolutions' zero-padded copy of a chunk of samples may take: a sixteenth
    of the budget (specs/conv.md#implicit-gemm)."""
    return _budget // 16


def sample_chunks(count: int, bytes_per_sample: int) -> list:
    """Slices covering samples 0..count-1 in order, each holding as many samples as fit the
    budget at `bytes_per_sample` (one at least)."""
    step = max(1, _budget // max(1, bytes_per_sample))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]
