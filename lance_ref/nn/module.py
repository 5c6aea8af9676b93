"""`Parameter` and `Module`, with torch.nn.Module's registration and naming (specs/nn.md#module).

A module registers what is assigned to it: `Parameter`s, sub-`Module`s and ndarray buffers
(`register_buffer`), each in insertion order. Names are torch's dotted names
(`features.0.weight`), so a `state_dict` has the keys a torch model of the same structure has.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np

from .. import autograd
from ..tensor import FLOAT_DTYPES, Tensor, float_dtype


class Parameter(Tensor):
    """A leaf tensor that a `Module` registers as a parameter; requires grad by default.
    `after_update`, if set, is called with no argument after an optimiser updates it
    (specs/optim.md#optimizer)."""

    __slots__ = ("after_update",)

    def __init__(self, data, requires_grad: bool = True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)
        self.after_update = None

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(..., strict=False)` left out: keys missing from / unknown to the model."""

    missing_keys: list
    unexpected_keys: list


# Qualified names for `owner_scope` (specs/nn.md#owner-names): the root module being called
# names every submodule after `named_modules()`. A counter bumped by every change of any
# module tree tells whether the last naming is still valid.
_tree = {"version": 0, "named": (None, -1)}  # named = (weakref to the root, version)
_calls = threading.local()


def _tree_changed() -> None:
    _tree["version"] += 1


def _check_name(name, kind: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
    if not name or "." in name:
        raise ValueError(f"{kind} name must be non-empty and contain no '.', got {name!r}")


class Module:
    """Base class of every layer and model, with torch.nn.Module's semantics (specs/nn.md#module).

    Subclasses call `super().__init__()` first, assign parameters, buffers and submodules as
    attributes, and define `forward`. Calling the module runs `forward` inside
    `autograd.owner_scope(<dotted name from the root>)`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_qualified_name", "")

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # --- registration ----------------------------------------------------------------------
    def _registries(self) -> dict:
        """kind -> the registry dict of that kind ("parameter", "buffer", "module")."""
        try:
            return {"parameter": self._parameters, "buffer": self._buffers, "module": self._modules}
        except AttributeError:
            raise AttributeError(
                f"cannot assign to {type(self).__name__} before Module.__init__() is called"
            ) from None

    def _forget(self, name: str) -> None:
        """Drop `name` from every registry (before it is registered again as something else)."""
        registries = self._registries()
        if name in registries["module"]:
            _tree_changed()
        for registry in registries.values():
            registry.pop(name, None)

    def _set_entry(self, kind: str, name: str, value) -> None:
        """Register `value` (an instance of kind's type, or None) as the `kind` entry `name`."""
        expected = _ENTRY_TYPES[kind]
        if value is not None and not isinstance(value, expected):
            raise TypeError(
                f"cannot assign {type(value).__name__} as {kind} {name!r} ({expected.__name__} or None expected)"
            )
        registries = self._registries()
        if name not in registries[kind]:
            self._forget(name)
            self.__dict__.pop(name, None)
        registries[kind][name] = value
        if kind == "module":
            _tree_changed()

    def _register(self, kind: str, name: str, value) -> None:
        _check_name(name, kind)
        if name in self.__dict__:
            raise KeyError(f"attribute {name!r} already exists")
        self._set_entry(kind, name, value)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or None, a declared but absent parameter) under `name`."""
        self._register("parameter", name, param)

    def register_buffer(self, name: str, array: np.ndarray | None) -> None:
        """Register the ndarray `array` (or None) as the buffer `name` (saved in `state_dict`)."""
        self._register("buffer", name, array)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register `module` (or None) as the submodule `name`."""
        self._register("module", name, module)

    def _registered_kind(self, name: str) -> str | None:
        return next((k for k in _ENTRY_TYPES if name in self.__dict__.get(f"_{k}s", ())), None)

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, Parameter):
            kind = "parameter"
        elif isinstance(value, Module):
            kind = "module"
        else:
            kind = self._registered_kind(name)  # e.g. `self.bias = None`, `self.running_mean = array`
        if kind is None:
            object.__setattr__(self, name, value)
        else:
            self._set_entry(kind, name, value)

    def __getattr__(self, name: str):
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if self._registered_kind(name) is None:
            object.__delattr__(self, name)
        else:
            self._forget(name)

    # --- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module ("") and every descendant, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def get_submodule(self, name: str) -> Module:
        """The descendant with dotted name `name` ("" is this module), as torch."""
        module = self
        for part in name.split(".") if name else ():
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {name!r})")
            module = child
        return module

    def set_submodule(self, name: str, module: Module) -> None:
        """Replace the descendant with dotted name `name` by `module`, as torch (the descendant
        must exist)."""
        parent_name, _, child = name.rpartition(".")
        parent = self.get_submodule(parent_name)
        if parent._modules.get(child) is None:
            raise AttributeError(f"{type(parent).__name__} has no submodule {child!r} (setting {name!r})")
        setattr(parent, child, module)

    def modules(self) -> Iterator[Module]:
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        return (child for _, child in self.named_children())

    def _named_entries(self, registry: str, prefix: str, recurse: bool):
        """(dotted name, value) of one registry over the tree; shared objects are listed once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, value in getattr(module, registry).items():
                if value is not None and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter), e.g. ("features.0.weight", ...), in registration order."""
        return self._named_entries("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, ndarray) of every buffer, e.g. ("bn1.running_mean", ...)."""
        return self._named_entries("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    # --- state -----------------------------------------------------------------------------
    def _state_entries(self, prefix: str = "") -> dict:
        """Name -> the live array of every parameter and buffer in torch's state_dict order: per
        module its parameters, then its buffers, then its children's (a shared module under each
        of its names, as torch)."""
        entries = {prefix + n: p.data for n, p in self._parameters.items() if p is not None}
        entries.update((prefix + n, b) for n, b in self._buffers.items() if b is not None)
        for name, child in self._modules.items():
            if child is not None:
                entries.update(child._state_entries(f"{prefix}{name}."))
        return entries

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers under torch's names (specs/nn.md#state-dict)."""
        return {name: array.copy() for name, array in self._state_entries().items()}

    def load_state_dict(self, state_dict, strict: bool = True, cast: bool = False) -> IncompatibleKeys:
        """Copy `state_dict`'s arrays into the parameters and buffers, in place.

        Every problem is collected and reported at once, naming the keys, before anything is
        changed: missing and unexpected keys (unless `strict=False`), shape mismatches and dtype
        mismatches (float arrays must have the module's dtype unless `cast=True`, which converts
        float32 and float64 entries to it; integer buffers take integers) (specs/nn.md#state-dict).
        """
        entries = self._state_entries()
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        errors = []
        if strict:
            errors += [f"missing key {k!r}" for k in missing]
            errors += [f"unexpected key {k!r}" for k in unexpected]
        for key, target in entries.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            if value.shape != target.shape:
                errors.append(f"shape mismatch for {key!r}: expected {target.shape}, got {value.shape}")
            elif target.dtype in FLOAT_DTYPES and value.dtype != target.dtype and not (cast and value.dtype in FLOAT_DTYPES):
                hint = "; pass cast=True to convert" if value.dtype in FLOAT_DTYPES else ""
                errors.append(f"dtype mismatch for {key!r}: expected {target.dtype}, got {value.dtype}{hint}")
            elif target.dtype.kind in "iu" and value.dtype.kind not in "iu":
                errors.append(f"dtype mismatch for {key!r}: expected an integer array, got {value.dtype}")
        if errors:
            raise ValueError(
                f"cannot load state_dict into {type(self).__name__}:\n  " + "\n  ".join(errors)
            )
        for key, target in entries.items():
            if key in state_dict:
                target[...] = state_dict[key]
        return IncompatibleKeys(missing, unexpected)

    # --- modes, gradients, dtype -----------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set `training` on this module and every descendant (BatchNorm, Dropout read it);
        modules pinned by `keep_eval()` stay in eval mode."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode) and not module.__dict__.get("_keep_eval", False))
        return self

    def keep_eval(self, flag: bool = True) -> Module:
        """Pin this module and its descendants in eval mode whatever `train()` says (or unpin
        them): a frozen BatchNorm keeps using its running statistics (specs/nn.md#freezing)."""
        for module in self.modules():
            object.__setattr__(module, "_keep_eval", bool(flag))
            object.__setattr__(module, "training", module.training and not flag)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def freeze(self) -> Module:
        """`requires_grad_(False)` and drop the gradients, so optimisers skip these parameters
        and leave them bit-identical (specs/nn.md#freezing). BatchNorm still updates its running
        statistics in training mode; call `.eval()` on it too to freeze those."""
        self.requires_grad_(False)
        self.zero_grad()
        return self

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to None."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype) -> Module:
        """Convert parameters (and their grads) and float buffers to `dtype`, in place."""
        dt = float_dtype(dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dt, copy=False)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dt, copy=False)
            for name, b in module._buffers.items():
                if b is not None and b.dtype in FLOAT_DTYPES:
                    module._buffers[name] = b.astype(dt, copy=False)
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # --- calling ---------------------------------------------------------------------------
    def _assign_names(self) -> None:
        """Give every module of this tree its dotted name from `self` (cached, specs/nn.md#owner-names)."""
        root, version = _tree["named"]
        if root is not None and root() is self and version == _tree["version"]:
            return
        for name, module in self.named_modules():
            object.__setattr__(module, "_qualified_name", name)
        _tree["named"] = (weakref.ref(self), _tree["version"])

    def __call__(self, *args, **kwargs):
        depth = getattr(_calls, "depth", 0)
        if depth == 0:
            self._assign_names()
        _calls.depth = depth + 1
        try:
            with autograd.owner_scope(self._qualified_name):
                return self.forward(*args, **kwargs)
        finally:
            _calls.depth = depth

    # --- printing --------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's settings, shown inside the parentheses of its repr."""
        return ""

    def __repr__(self) -> str:
        lines = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


_ENTRY_TYPES = {"parameter": Parameter, "buffer": np.ndarray, "module": Module}


@contextmanager
def eval_mode(model: Module):
    """Within the block `model` is in eval mode; its mode is restored after, whatever happens."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
