"""``assert_pure``: call a function and check that it left everything it was given alone."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from esper_func.errors import EsperFuncError

__all__ = ["PurityError", "assert_pure"]

R = TypeVar("R")

#: How deep ``assert_pure`` looks into nested arguments.
_MAX_DEPTH = 64
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
#: Values that hold nothing mutable.
_ATOMS = frozenset({int, float, bool, complex, str, bytes, type(None)})


class PurityError(EsperFuncError, AssertionError):
    """A function that changed its arguments or the global RNG, or returned an alias of an input."""

    __module__ = "esper_func.testing"


class _TensorRecord(NamedTuple):
    path: str
    tensor: Tensor
    copy: Tensor | None
    version: int | None
    meta: tuple[Any, ...]
    grad: Tensor | None
    grad_version: int | None


def _version(t: Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors have no version counter
        return None


def _meta(t: Tensor) -> tuple[Any, ...]:
    """``(dtype, device, shape, stride, offset, storage pointer, requires_grad)``."""
    try:
        ptr: int | None = t.untyped_storage().data_ptr()
        offset: Any = t.storage_offset()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        ptr, offset = None, None
    stride = t.stride() if t.layout == torch.strided else None
    return (t.dtype, t.device, tuple(t.shape), stride, offset, ptr, t.requires_grad)


def _copy(t: Tensor) -> Tensor | None:
    if t.device.type == "meta":
        return None
    try:
        return t.detach().clone()
    except RuntimeError:  # pragma: no cover - exotic tensor subclasses
        return None


def _bits(t: Tensor) -> Tensor:
    """``t`` reinterpreted as integers of the same width, so that NaNs and signed zeros compare bitwise."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    if t.is_floating_point():
        return t.view(_INT_OF_SIZE[t.element_size()])
    return t


def _same_values(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    try:
        return bool(torch.equal(_bits(a), _bits(b)))
    except (RuntimeError, KeyError, TypeError):  # pragma: no cover - layouts without views
        return bool(torch.equal(a, b))


def _grad_of(t: Tensor) -> Tensor | None:
    # Reading .grad of a non-leaf tensor warns; only leaves accumulate gradients.
    return t.grad if t.is_leaf else None


def _dict_shape(obj: Any) -> Any:
    return [(k, id(v)) for k, v in obj.items()]


def _list_shape(obj: Any) -> Any:
    return [id(v) for v in obj]


def _set_shape(obj: Any) -> Any:
    return sorted(id(v) for v in obj)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _fields_shape(obj: Any) -> Any:
    return [id(getattr(obj, name)) for name in _field_names(type(obj))]


def _module_shape(obj: Any) -> Any:
    return [(name, id(m), m.training) for name, m in obj.named_modules()]


class _Snapshot:
    """Every tensor, generator and mutable container reachable from some values."""

    def __init__(self, *, copy: bool) -> None:
        self.tensors: list[_TensorRecord] = []
        self.by_id: dict[int, str] = {}
        #: ``(path, object, how to read its shape, its shape now)``
        self.containers: list[tuple[str, Any, Callable[[Any], Any], Any]] = []
        self.generators: list[tuple[str, torch.Generator, Tensor]] = []
        self._copy = copy
        self._seen: set[int] = set()

    def add(self, obj: Any, path: str, depth: int = 0) -> None:
        if type(obj) in _ATOMS or isinstance(obj, Enum) or depth > _MAX_DEPTH:
            return
        if id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        if isinstance(obj, Tensor):
            self.by_id[id(obj)] = path
            grad = _grad_of(obj)
            self.tensors.append(
                _TensorRecord(
                    path,
                    obj,
                    _copy(obj) if self._copy else None,
                    _version(obj),
                    _meta(obj),
                    grad,
                    None if grad is None else _version(grad),
                )
            )
        elif isinstance(obj, (tuple, list)):
            if isinstance(obj, list):
                self._container(path, obj, _list_shape)
            for i, value in enumerate(obj):
                if type(value) not in _ATOMS:
                    self.add(value, f"{path}[{i}]", depth + 1)
        elif isinstance(obj, torch.Generator):
            self.generators.append((path, obj, obj.get_state()))
        elif isinstance(obj, nn.Module):
            self._container(path, obj, _module_shape)
            for name, tensor in obj.state_dict(keep_vars=True).items():
                self.add(tensor, f"{path}.{name}", depth + 1)
        elif isinstance(obj, Mapping):
            if isinstance(obj, dict):
                self._container(path, obj, _dict_shape)
            for key, value in list(obj.items()):
                if type(value) not in _ATOMS:
                    self.add(value, f"{path}[{key!r}]", depth + 1)
        elif isinstance(obj, (set, frozenset)):
            if isinstance(obj, set):
                self._container(path, obj, _set_shape)
            for value in obj:
                self.add(value, f"{path}{{...}}", depth + 1)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            names = _field_names(type(obj))
            if not type(obj).__dataclass_params__.frozen:  # type: ignore[attr-defined]
                self._container(path, obj, _fields_shape)
            for name in names:
                value = getattr(obj, name)
                if type(value) not in _ATOMS:
                    self.add(value, f"{path}.{name}", depth + 1)

    def _container(self, path: str, obj: Any, shape: Callable[[Any], Any]) -> None:
        if self._copy:
            self.containers.append((path, obj, shape, shape(obj)))

    def changes(self) -> list[str]:
        """What changed since the snapshot was taken, one line per changed thing."""
        problems: list[str] = []
        for rec in self.tensors:
            what = _tensor_changes(rec)
            if what:
                problems.append(f"{rec.path}: {'; '.join(what)}")
        for path, container, shape_of, shape in self.containers:
            if shape_of(container) != shape:
                if isinstance(container, nn.Module):
                    kind = "its submodules or train/eval mode changed"
                elif dataclasses.is_dataclass(container):
                    kind = "fields were reassigned"
                else:
                    kind = "entries were added, removed or replaced"
                problems.append(f"{path}: {kind} (the {type(container).__name__} was changed in place)")
        for path, gen, state in self.generators:
            if not torch.equal(gen.get_state(), state):
                problems.append(
                    f"{path}: the torch.Generator was advanced (draw from a copy: "
                    "g2 = torch.Generator(); g2.set_state(g.get_state()))"
                )
        return problems


def _tensor_changes(rec: _TensorRecord) -> list[str]:
    t = rec.tensor
    what: list[str] = []
    version = _version(t)
    if rec.version is not None and version != rec.version:
        what.append(f"modified in place (version counter {rec.version} -> {version})")
    meta = _meta(t)
    if meta[:6] != rec.meta[:6]:
        what.append(
            "resized or rebound to other memory (dtype, device, shape, stride, offset or storage changed; "
            f"shape {list(rec.meta[2])} -> {list(meta[2])})"
        )
    elif rec.copy is not None and not _same_values(t, rec.copy):
        what.append("its values changed" if what else "its values changed without a version bump (through .data?)")
    if meta[6] != rec.meta[6]:
        what.append(f"requires_grad changed from {rec.meta[6]} to {meta[6]}")
    grad = _grad_of(t)
    if grad is not rec.grad or (grad is not None and _version(grad) != rec.grad_version):
        what.append("its .grad was written (backward() or an optimizer step on an input)")
    return what


def _global_rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["random"])
    if "torch.cuda" in states:
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    if "numpy" in states:
        sys.modules["numpy"].random.set_state(states["numpy"])


def _same_rng(name: str, a: Any, b: Any) -> bool:
    if name == "torch":
        return bool(torch.equal(a, b))
    if name == "torch.cuda":
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    if name == "numpy":
        return bool(a[0] == b[0] and (a[1] == b[1]).all() and tuple(a[2:]) == tuple(b[2:]))
    return bool(a == b)


_RNG_NAMES = {
    "torch": "torch's global RNG (torch.manual_seed, torch.rand without a generator, nn init)",
    "torch.cuda": "torch's CUDA RNGs",
    "random": "Python's global random module",
    "numpy": "NumPy's global RNG (numpy.random)",
}


def _rng_changes(before: dict[str, Any]) -> list[str]:
    after = _global_rng_states()
    changed = [name for name in before if name in after and not _same_rng(name, before[name], after[name])]
    if not changed:
        return []
    _restore_rng_states(before)
    return [
        f"{_RNG_NAMES[name]} was used or reseeded; draw from an explicit torch.Generator instead "
        "(the state has been put back)"
        for name in changed
    ]


def _aliases(before: _Snapshot, out: Any) -> list[str]:
    storages: dict[int, str] = {}
    for rec in before.tensors:
        ptr = rec.meta[5]
        if ptr:  # 0 for meta tensors and empty storages
            storages.setdefault(ptr, rec.path)
    problems: list[str] = []
    result = _Snapshot(copy=False)
    result.add(out, "result")
    for rec in result.tensors:
        if id(rec.tensor) in before.by_id:
            continue  # an input passed through unchanged: structural sharing, not a new alias
        ptr = rec.meta[5]
        if ptr and ptr in storages:
            problems.append(
                f"{rec.path} shares memory with the input {storages[ptr]} (a view or alias: writing to the "
                "result would change the input); return a fresh tensor (e.g. .clone())"
            )
    return problems


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def _message(fn: Callable[..., Any], problems: list[str], failed: BaseException | None = None) -> str:
    head = f"assert_pure: {_describe(fn)} is not pure"
    if failed is not None:
        head += f" (it raised {type(failed).__name__} after changing its inputs)"
    return head + ":\n" + "\n".join(f"  - {p}" for p in problems)


def assert_pure(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Call ``fn(*args, **kwargs)``, check that the call was pure, and return its result.

    Fails with :class:`PurityError` (an ``AssertionError``) listing every
    problem found:

    - a tensor anywhere in the arguments (nested in dicts, lists, tuples,
      dataclasses such as a ``SeedState``, or the parameters and buffers of an
      ``nn.Module``) changed: its bits (NaNs and signed zeros included), its
      in-place version counter (a write that restored the same values still
      counts), its shape, dtype, strides or storage, ``requires_grad``, or
      its ``.grad``;
    - a ``dict``, ``list`` or ``set`` in the arguments gained, lost or
      replaced an entry, a field of a (non-frozen) dataclass was reassigned, or a module's
      submodules or train/eval mode changed;
    - a ``torch.Generator`` in the arguments was advanced (esper_func reads
      generators, it never advances them);
    - the global RNG state changed: torch's (CPU, and CUDA once
      initialised), Python's ``random`` and NumPy's legacy global RNG (the
      states are put back before raising, so later tests are not affected);
    - a tensor in the result shares memory with an input tensor without
      being that tensor itself: a view such as ``x[0]``, ``x.view(...)``,
      ``x.t()`` or ``x.detach()``. Returning an input tensor itself as part
      of the result (``ef.add_seed`` passes the host's parameters through
      unchanged) is structural sharing, as in any functional API, and allowed.

    If ``fn`` raises, its inputs are still checked (nothing may be half
    applied): a change is reported with the exception chained; otherwise the
    exception propagates unchanged.

    The keyword arguments all go to ``fn``; the check itself has no options.
    """
    if not callable(fn):
        raise TypeError(f"assert_pure() needs a callable first; got {type(fn).__name__}")
    before = _Snapshot(copy=True)
    for i, arg in enumerate(args):
        before.add(arg, f"args[{i}]")
    for key, value in kwargs.items():
        before.add(value, f"kwargs[{key!r}]")
    rng = _global_rng_states()
    try:
        out = fn(*args, **kwargs)
    except BaseException as exc:
        problems = before.changes() + _rng_changes(rng)
        if problems:
            raise PurityError(_message(fn, problems, failed=exc)) from exc
        raise
    problems = before.changes() + _rng_changes(rng) + _aliases(before, out)
    if problems:
        raise PurityError(_message(fn, problems))
    return out
