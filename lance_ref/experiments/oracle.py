"""`lance-ref oracle`: reference outputs and gradients for a case file, and how far a user's
own arrays are from them (specs/oracle.md).

A case is an `.npz` holding `op` (a string naming the case), `params` (a JSON string of its
hyperparameters), the arrays the case takes, optionally `grad_output`, and optionally the user's
results under `user/<name>`, for each reference array `<name>` the user wants checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..compress import Calibrator, conv2d_weight_grad, hosvd
from ..io import load_npz, save_npz
from ..kernels import tucker_reconstruct
from ..nn import Dropout, build_model
from ..tensor import Tensor

USER = "user/"


@dataclass(frozen=True)
class Case:
    """How one op's case runs: the arrays it requires and may take (a trailing `*` names a
    family such as `batch_*`) and the function from (arrays, params) to reference arrays."""

    run: object
    required: tuple
    optional: tuple = ()

    def takes(self, name: str) -> bool:
        return any(name == n or n.endswith("*") and name.startswith(n[:-1]) for n in self.required + self.optional)


CASES: dict[str, Case] = {}


def case(name: str, required: tuple, optional: tuple = ()):
    """Register the function below as the oracle case `name`."""

    def register(run):
        CASES[name] = Case(run, required, optional)
        return run

    return register


def differentiate(op, inputs: dict, grad_output) -> dict:
    """`output = op(**inputs)` and, when `grad_output` is given (or the output is a scalar, whose
    gradient is then 1), `grad_<name>` for every float input; a tuple output's second element
    is max-pooling's `indices`."""
    tensors = {k: Tensor(v, requires_grad=True) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    out = op(**tensors)
    out, extra = (out[0], {"indices": out[1]}) if isinstance(out, tuple) else (out, {})
    results = {"output": out.data.copy(), **extra}
    if grad_output is None and out.data.ndim == 0:
        grad_output = np.ones((), out.dtype)
    if grad_output is not None:
        if grad_output.shape != out.shape:
            raise ValueError(f"grad_output must have the output's shape {out.shape}, got {grad_output.shape}")
        out.backward(grad_output.astype(out.dtype))
        results.update({f"grad_{k}": t.grad for k, t in tensors.items() if isinstance(t, Tensor) and t.grad is not None})
    return results


def _present(arrays, names):
    """The arrays among `names` that the case holds."""
    return {k: arrays[k] for k in names if k in arrays}


@case("conv2d", ("input", "weight"), ("bias", "grad_output"))
def _conv2d(arrays, params):
    op = lambda input, weight, bias=None: F.conv2d(input, weight, bias, **params)  # noqa: E731
    return differentiate(op, _present(arrays, ("input", "weight", "bias")), arrays.get("grad_output"))


@case("linear", ("input", "weight"), ("bias", "grad_output"))
def _linear(arrays, params):
    op = lambda input, weight, bias=None: F.linear(input, weight, bias)  # noqa: E731
    return differentiate(op, _present(arrays, ("input", "weight", "bias")), arrays.get("grad_output"))


def _pooling(name, pool):
    @case(name, ("input",), ("grad_output",))
    def run(arrays, params):
        return differentiate(lambda input: pool(input, **params), {"input": arrays["input"]}, arrays.get("grad_output"))


for _name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"):
    _pooling(_name, getattr(F, _name))


@case("batch_norm", ("input",), ("weight", "bias", "running_mean", "running_var", "grad_output"))
def _batch_norm(arrays, params):
    running = {k: arrays[k].copy() for k in ("running_mean", "running_var") if k in arrays}

    def op(input, weight=None, bias=None):
        return F.batch_norm(input, running.get("running_mean"), running.get("running_var"), weight, bias, **params)

    results = differentiate(op, _present(arrays, ("input", "weight", "bias")), arrays.get("grad_output"))
    return {**results, **running}  # the running statistics after the update (training) or as given


@case("cross_entropy", ("input", "target"), ("weight", "grad_output"))
def _cross_entropy(arrays, params):
    weight = arrays.get("weight")
    op = lambda input: F.cross_entropy(input, arrays["target"], weight, **params)  # noqa: E731
    return differentiate(op, {"input": arrays["input"]}, arrays.get("grad_output"))


@case("model", ("input", "target"), ("state/*",))
def _model_step(arrays, params):
    """One training-mode step of a zoo model, dropout off: logits, the mean cross-entropy loss,
    every parameter's gradient and the state_dict after the step (BatchNorm's running statistics
    updated)."""
    x = arrays["input"]
    if x.ndim != 4:
        raise ValueError(f"input must have shape (N, C, H, W), got {x.shape}")
    if "name" not in params or "num_classes" not in params:
        raise ValueError('params must give the zoo model as "name" and its "num_classes"')
    model = build_model(params["name"], params["num_classes"], x.shape[1], x.shape[2], dtype=x.dtype,
                        **params.get("options", {}))
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    if state:
        model.load_state_dict(state, cast=params.get("cast_weights", False))
    model.train()
    for module in model.modules():
        if isinstance(module, Dropout):  # its masks are random: no other framework can match them
            module.eval()
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, arrays["target"], **params.get("loss", {}))
    loss.backward()
    return {
        "logits": logits.data.copy(),
        "loss": loss.data.copy(),
        **{f"grad/{k}": p.grad for k, p in model.named_parameters() if p.grad is not None},
        **{f"state/{k}": np.array(v, copy=True) for k, v in model.state_dict().items()},
    }


def _factors(factors) -> dict:
    return {f"factor_{n}": u for n, u in enumerate(factors) if u is not None}


@case("hosvd", ("input",))
def _hosvd(arrays, params):
    """The truncated HOSVD: core, factors (signed by specs/hosvd.md's convention) and the
    reconstruction core x_n U_n, which does not depend on the signs."""
    core, factors = hosvd(arrays["input"], params.get("eps", 0.9), params.get("modes"))
    return {"core": core, **_factors(factors), "reconstruction": tucker_reconstruct(core, factors)}


@case("lance_calibration", ("batch_0",), ("batch_*",))
def _lance_calibration(arrays, params):
    """LANCE's bases from the summed Grams of batch_0, batch_1, ... (specs/hosvd.md#calibration)."""
    batches = [arrays[f"batch_{i}"] for i in range(len(arrays)) if f"batch_{i}" in arrays]
    if len(batches) != sum(k.startswith("batch_") for k in arrays):
        raise ValueError(f"batches must be numbered batch_0 .. batch_{len(arrays) - 1} without gaps")
    ndim = batches[0].ndim
    calibrator = Calibrator(params.get("eps", 0.9), params.get("modes", range(ndim)), ndim)
    for batch in batches:
        calibrator.update(batch)
    grams = {f"gram_{n}": g for n, g in enumerate(calibrator.grams) if g is not None}
    return {**_factors(calibrator.bases()), **grams}


@case("conv2d_weight_grad", ("core", "grad_output"), ("factor_*",))
def _conv2d_weight_grad(arrays, params):
    """dW from a Tucker form of the input (specs/compressed.md#conv2d-weight-gradient)."""
    factors = [arrays.get(f"factor_{n}") for n in range(4)]
    if "weight_shape" not in params:
        raise ValueError('params must give "weight_shape" (O, C/groups, kh, kw)')
    geometry = {k: params[k] for k in ("stride", "padding", "dilation", "groups") if k in params}
    grad = conv2d_weight_grad(arrays["core"], factors, arrays["grad_output"], tuple(params["weight_shape"]), **geometry)
    return {"grad_weight": grad}


def read_case(path) -> tuple:
    """(op, params, arrays, user arrays) of the case file `path`, checked before any work."""
    stored = load_npz(path, required=("op",))
    op = str(stored.pop("op"))
    if op not in CASES:
        raise ValueError(f"{path}: unknown op {op!r}; the cases are {', '.join(sorted(CASES))}")
    try:
        params = json.loads(str(stored.pop("params", "{}")))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: params must be a JSON object: {error}") from error
    if not isinstance(params, dict):
        raise ValueError(f"{path}: params must be a JSON object, got {type(params).__name__}")
    user = {k[len(USER):]: v for k, v in stored.items() if k.startswith(USER)}
    arrays = {k: v for k, v in stored.items() if not k.startswith(USER)}
    spec = CASES[op]
    missing = [k for k in spec.required if k not in arrays]
    unknown = sorted(k for k in arrays if not spec.takes(k))
    if missing or unknown:
        problem = f"lacks {missing}" if missing else f"has arrays {op} does not take: {unknown}"
        raise ValueError(f"{path}: case {op!r} {problem}; it takes {list(spec.required + spec.optional)}")
    for name, array in arrays.items():
        if array.dtype.kind not in "fiub":
            raise ValueError(f"{path}: array {name!r} has dtype {array.dtype}; expected numbers")
    return op, params, arrays, user


@dataclass(frozen=True)
class Comparison:
    """A user's array against the reference: max |user - ref|, that over max |ref|, where the
    largest difference is, and whether |user - ref| <= atol + rtol |ref| everywhere."""

    name: str
    shape: tuple
    abs_error: float
    rel_error: float
    worst_index: tuple
    passed: bool
    note: str = ""

    def line(self) -> str:
        if self.note:
            return f"{self.name:28s} FAIL  {self.note}"
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.name:28s} {verdict}  max abs {self.abs_error:.3e}  rel {self.rel_error:.3e}  "
            f"worst at {self.worst_index}  shape {self.shape}"
        )


def compare(name: str, user, reference, rtol: float, atol: float) -> Comparison:
    if reference is None:
        return Comparison(name, (), np.inf, np.inf, (), False, "this case has no reference array of that name")
    user, reference = np.asarray(user), np.asarray(reference)
    if user.shape != reference.shape:
        return Comparison(name, reference.shape, np.inf, np.inf, (), False,
                          f"shape {user.shape}, the reference has {reference.shape}")
    difference = np.array(np.abs(user.astype(np.float64) - reference.astype(np.float64)))  # 0-d stays an array
    difference[np.isnan(user) & np.isnan(reference)] = 0  # NaN where the reference is NaN agrees
    difference[np.isnan(difference)] = np.inf
    scale = float(np.abs(reference[np.isfinite(reference)]).max(initial=0.0))
    worst = np.unravel_index(np.argmax(difference), difference.shape) if difference.size else ()
    largest = float(difference.max(initial=0.0))
    passed = bool(np.all(difference <= atol + rtol * np.abs(reference.astype(np.float64))))
    return Comparison(name, reference.shape, largest, largest / scale if scale else largest,
                      tuple(int(i) for i in worst), passed)


def default_tolerances(arrays: dict) -> tuple:
    """(rtol, atol): float64 cases 1e-10 and 1e-12, float32 ones 1e-4 and 1e-5."""
    wide = all(a.dtype != np.float32 for a in arrays.values() if a.dtype.kind == "f")
    return (1e-10, 1e-12) if wide else (1e-4, 1e-5)


def run(case_path, out_path, rtol=None, atol=None, show=print) -> list:
    """Write the reference arrays of the case at `case_path` to `out_path`; compare the user's
    arrays with them. Returns the comparisons (empty when the case holds none)."""
    op, params, arrays, user = read_case(case_path)
    default_rtol, default_atol = default_tolerances(arrays)
    rtol, atol = default_rtol if rtol is None else rtol, default_atol if atol is None else atol
    try:
        reference = CASES[op].run(arrays, params)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{case_path}: case {op!r}: {error}") from error
    save_npz(out_path, reference)
    show(f"{op}: {len(reference)} reference arrays written to {out_path}")
    comparisons = [compare(name, user[name], reference.get(name), rtol, atol) for name in sorted(user)]
    for comparison in comparisons:
        show(comparison.line())
    if comparisons:
        failed = sum(not c.passed for c in comparisons)
        show(f"{len(comparisons) - failed} of {len(comparisons)} arrays within rtol {rtol:g}, atol {atol:g}")
    return comparisons

