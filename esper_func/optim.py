"""Pure optimizers over parameter trees (optax style, PyTorch's own kernels).

An optimizer is a frozen, hashable value holding its hyperparameters, with
two pure methods::

    opt = ef.optim.adamw(1e-3)
    state = opt.init(params)
    params, state = opt.update(grads, state, params, mask=None)

``params`` and ``grads`` are arbitrary trees (nested dicts, lists, tuples,
project pytree dataclasses) of tensors with the same structure, e.g. the
model layout ``{"host": {...}, "slots": {slot_id: {"seed": {...}, ...}}}``.
``state`` is a small pytree dataclass (:class:`SGDState`, :class:`AdamState`)
whose fields are trees with the structure of ``params``.

Contracts
    * **Pure.** ``update`` never modifies ``grads``, ``state`` or ``params``
      (PyTorch's in-place kernels run on clones), and its outputs never alias
      its inputs: every returned tensor is new. Returned parameters keep each
      input parameter's ``requires_grad`` flag, as fresh leaf tensors.
    * **Same numbers as ``torch.optim``.** The arithmetic is PyTorch's:
      ``torch.optim.sgd.sgd`` and ``torch.optim.adam.adam`` (``adamw`` is
      ``adam`` with decoupled weight decay), with the same foreach/fused
      default selection as ``torch.optim.SGD`` / ``AdamW`` (single-tensor on
      CPU, foreach on CUDA). A sequence of updates matches the stateful
      optimizer step for step.
    * **Per-leaf step counters.** ``state.count`` holds one 0-d ``float32``
      tensor per parameter (as ``torch.optim.Adam`` keeps ``step``), so a
      frozen leaf keeps its own count and Adam's bias correction stays right
      for leaves that trained for fewer steps.

Masks (``update(..., mask=...)``)
    ``mask`` is a *prefix tree* of Python bools over ``params``: a bool at
    some node applies to every leaf below it; dicts (and lists/tuples) are
    followed key by key; a key absent from the mask means ``True``. For
    example ``{"host": True, "slots": {"r0c0": False}}`` trains the host and
    every slot except ``r0c0``. A callable ``mask(params) -> tree`` is also
    accepted. Keys in the mask that ``params`` does not have are ignored (a
    mask may name slots that hold no seed).

    A leaf whose mask is ``False`` is *frozen for this step*: its parameter
    is returned bitwise unchanged and so is every piece of its optimizer
    state (moments, momentum buffer, step count). No weight decay, no moment
    decay, no count advance: it is as if the leaf was not in the optimizer
    this step. A leaf whose gradient is ``None`` is treated the same way
    (as ``torch.optim`` skips parameters whose ``.grad`` is ``None``). This
    is what the blend-out of a seed that is being faded out needs: its
    weights and state stay exactly where they were while alpha falls.

Structure changes
    Germinating or removing a seed changes the structure of ``params``;
    :func:`reinit_like` builds a state for the new structure, keeping the
    state of every leaf that survives.

Learning-rate schedules: optimizers are cheap values and the state does not
depend on ``lr``, so build ``adamw(lr_of(epoch))`` whenever the rate changes.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import optree
import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam
from torch.optim.sgd import sgd as _torch_sgd

from esper_func._pytree import NAMESPACE, pytree_dataclass
from esper_func.errors import DTypeError, ParamsMismatchError, ShapeError

__all__ = [
    "SGD",
    "Adam",
    "AdamState",
    "Optimizer",
    "SGDState",
    "adam",
    "adamw",
    "reinit_like",
    "sgd",
    "state_from_tree",
    "state_to_tree",
]

Tree = Any
Mask = Any  # bool | Mapping[str, Mask] | Sequence[Mask] | Callable[[Tree], Mask] | None

_COUNT_DTYPE = torch.float32


# --------------------------------------------------------------------------- state types


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class SGDState:
    """State of :func:`sgd`.

    Attributes:
        count: per leaf, a 0-d ``float32`` tensor: how many updates the leaf took.
        momentum: per leaf, the momentum buffer (zeros before the first
            update), or ``None`` when ``momentum == 0``.
    """

    count: Tree
    momentum: Tree | None = None


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class AdamState:
    """State of :func:`adam` / :func:`adamw` (``torch.optim.Adam``'s per-parameter state).

    Attributes:
        count: per leaf, a 0-d ``float32`` step counter (torch's ``step``).
        exp_avg: per leaf, the first moment.
        exp_avg_sq: per leaf, the second moment.
        max_exp_avg_sq: per leaf, the running maximum of the second moment
            (``amsgrad``), else ``None``.
    """

    count: Tree
    exp_avg: Tree
    exp_avg_sq: Tree
    max_exp_avg_sq: Tree | None = None


# --------------------------------------------------------------------------- tree helpers


def _fmt(path: Sequence[Any]) -> str:
    return "".join(f"[{k!r}]" for k in path) or "<root>"


def _flatten(tree: Tree, what: str, *, allow_none: bool = False) -> tuple[list[tuple[Any, ...]], list[Any], Any]:
    paths, leaves, spec = optree.tree_flatten_with_path(tree, namespace=NAMESPACE)
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, Tensor) and not (allow_none and leaf is None):
            raise DTypeError(f"{what}{_fmt(path)} must be a tensor; got {type(leaf).__name__}")
    return paths, leaves, spec


def _structure_mismatch(what: str, expected_paths: Sequence[tuple[Any, ...]], tree: Tree, hint: str = "") -> ParamsMismatchError:
    got = set(optree.tree_paths(tree, namespace=NAMESPACE))
    want = set(expected_paths)
    missing = sorted(_fmt(p) for p in want - got)
    extra = sorted(_fmt(p) for p in got - want)
    detail = []
    if missing:
        detail.append(f"missing {missing}")
    if extra:
        detail.append(f"unexpected {extra}")
    if not detail:
        detail.append("same leaves but a different container structure")
    return ParamsMismatchError(f"{what} does not have the structure of params: {'; '.join(detail)}{hint}")


def _leaves_like(spec: Any, paths: Sequence[tuple[Any, ...]], tree: Tree, what: str, hint: str = "", *, allow_none: bool = False) -> list[Any]:
    """The leaves of ``tree`` in ``spec``'s order, checking that the structures agree."""
    try:
        leaves = spec.flatten_up_to(tree)
    except (ValueError, TypeError):
        raise _structure_mismatch(what, paths, tree, hint) from None
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, Tensor) and not (allow_none and leaf is None):
            raise DTypeError(f"{what}{_fmt(path)} must be a tensor; got {type(leaf).__name__}")
    return leaves


def _resolve_mask(mask: Mask, path: tuple[Any, ...], default: bool = True) -> bool:
    node = mask
    for depth, key in enumerate(path):
        if isinstance(node, bool):
            return node
        if isinstance(node, Mapping):
            if key not in node:
                return default
            node = node[key]
        elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            if not isinstance(key, int) or not -len(node) <= key < len(node):
                return default
            node = node[key]
        else:
            raise TypeError(
                f"mask{_fmt(path[:depth])} must be a bool, a dict or a list of masks; got {type(node).__name__}"
            )
    if isinstance(node, bool):
        return node
    raise TypeError(
        f"mask{_fmt(path)} is at a parameter leaf and must be a Python bool; got {type(node).__name__}"
    )


def _leaf_mask(mask: Mask, params: Tree, paths: Sequence[tuple[Any, ...]], *, default: bool = True) -> list[bool]:
    if mask is None:
        return [default] * len(paths)
    if callable(mask) and not isinstance(mask, (Mapping, Sequence)):
        mask = mask(params)
    return [_resolve_mask(mask, path, default) for path in paths]


def _fresh(t: Tensor) -> Tensor:
    return t.detach().clone()


def _as_param(new: Tensor, like: Tensor) -> Tensor:
    return new.requires_grad_(like.requires_grad) if like.requires_grad else new


def _check_float(name: str, value: float, *, low: float = 0.0, high: float | None = None, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < low or (high is not None and (value >= high if high_open else value > high)):
        bound = f"[{low}, {high})" if high_open else (f"[{low}, {high}]" if high is not None else f">= {low}")
        raise ValueError(f"{name} must be in {bound}; got {value!r}")


# --------------------------------------------------------------------------- optimizer base


class Optimizer(abc.ABC):
    """A pure optimizer: frozen hyperparameters plus ``init`` and ``update``.

    Subclasses are frozen dataclasses; they name their per-leaf state
    (``_slots``: state field names besides ``count``), build it
    (``_init_slot``) and run PyTorch's kernel on lists of cloned tensors
    (``_kernel``). Masking, cloning, validation and reassembly live here.
    """

    _state_cls: ClassVar[type[Any]]

    @abc.abstractmethod
    def _slots(self) -> tuple[str, ...]: ...

    @abc.abstractmethod
    def _kernel(self, params: list[Tensor], grads: list[Tensor], slots: dict[str, list[Any]], counts: list[Tensor]) -> None: ...

    def _init_slot(self, name: str, param: Tensor) -> Tensor:
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    def _init_leaf(self, param: Tensor) -> dict[str, Tensor]:
        leaf = {"count": torch.zeros((), dtype=_COUNT_DTYPE)}
        for name in self._slots():
            leaf[name] = self._init_slot(name, param.detach())
        return leaf

    def _build_state(self, spec: Any, per_leaf: list[dict[str, Tensor]]) -> Any:
        fields: dict[str, Any] = {f.name: None for f in dataclasses.fields(self._state_cls)}
        for name in ("count", *self._slots()):
            fields[name] = optree.tree_unflatten(spec, [leaf[name] for leaf in per_leaf])
        return self._state_cls(**fields)

    def _state_leaves(self, state: Any, spec: Any, paths: Sequence[tuple[Any, ...]]) -> list[dict[str, Tensor]]:
        if not isinstance(state, self._state_cls):
            raise TypeError(
                f"{type(self).__name__} needs a {self._state_cls.__name__}; got {type(state).__name__} "
                f"(was the state made by another optimizer?)"
            )
        hint = "; after germinating or removing a seed, rebuild the state with ef.optim.reinit_like(opt, state, params)"
        columns = {
            name: _leaves_like(spec, paths, getattr(state, name), f"state.{name}", hint)
            for name in ("count", *self._slots())
        }
        return [{name: columns[name][i] for name in columns} for i in range(len(paths))]

    def init(self, params: Tree) -> Any:
        """A fresh state for ``params``: zero counts, zero moments/buffers (reads ``params`` only)."""
        _, leaves, spec = _flatten(params, "params")
        return self._build_state(spec, [self._init_leaf(p) for p in leaves])

    def update(self, grads: Tree, state: Any, params: Tree, *, mask: Mask = None) -> tuple[Tree, Any]:
        """One optimizer step: ``(new_params, new_state)``.

        Args:
            grads: gradients, same structure as ``params``; a ``None`` leaf
                means "no gradient": that leaf is frozen this step.
            state: the state from :meth:`init` or a previous :meth:`update`.
            params: current parameters.
            mask: optional prefix tree of bools; ``False`` freezes a subtree
                (parameters and state bitwise unchanged, see the module doc).

        Raises:
            ParamsMismatchError: ``grads`` or ``state`` do not have the
                structure of ``params`` (the message lists missing and
                unexpected paths).
            ShapeError: a gradient's shape differs from its parameter's.
            DTypeError: a leaf is not a tensor, or a gradient's dtype or
                device differs from its parameter's.
        """
        paths, leaves, spec = _flatten(params, "params")
        grad_leaves = _leaves_like(spec, paths, grads, "grads", allow_none=True)
        for path, p, g in zip(paths, leaves, grad_leaves, strict=True):
            if g is not None and g.shape != p.shape:
                raise ShapeError(f"grads{_fmt(path)} has shape {tuple(g.shape)} but the parameter has {tuple(p.shape)}")
            if g is not None and (g.dtype != p.dtype or g.device != p.device):
                raise DTypeError(
                    f"grads{_fmt(path)} is {g.dtype} on {g.device} but the parameter is {p.dtype} on {p.device}"
                )
        old = self._state_leaves(state, spec, paths)
        active = [m and g is not None for m, g in zip(_leaf_mask(mask, params, paths), grad_leaves, strict=True)]

        new_params = [_fresh(p) for p in leaves]
        new_leaves = [{name: _fresh(t) for name, t in leaf.items()} for leaf in old]
        idx = [i for i, a in enumerate(active) if a]
        if idx:
            slots = {name: [new_leaves[i][name] for i in idx] for name in self._slots()}
            with torch.no_grad():
                self._kernel(
                    [new_params[i] for i in idx],
                    [grad_leaves[i].detach() for i in idx],
                    slots,
                    [new_leaves[i]["count"] for i in idx],
                )
            for name, column in slots.items():  # kernels may replace list entries
                for i, t in zip(idx, column, strict=True):
                    new_leaves[i][name] = t
        out = optree.tree_unflatten(spec, [_as_param(n, p) for n, p in zip(new_params, leaves, strict=True)])
        return out, self._build_state(spec, new_leaves)


# --------------------------------------------------------------------------- SGD


@dataclasses.dataclass(frozen=True)
class SGD(Optimizer):
    """``torch.optim.SGD`` as a pure optimizer; build with :func:`sgd`."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    maximize: bool = False

    _state_cls: ClassVar[type[Any]] = SGDState

    def __post_init__(self) -> None:
        _check_float("lr", self.lr)
        _check_float("momentum", self.momentum)
        _check_float("weight_decay", self.weight_decay)
        _check_float("dampening", self.dampening)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"nesterov momentum requires momentum > 0 and dampening == 0; got momentum={self.momentum}, "
                f"dampening={self.dampening}"
            )

    def _slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum != 0 else ()

    def _kernel(self, params: list[Tensor], grads: list[Tensor], slots: dict[str, list[Any]], counts: list[Tensor]) -> None:
        buffers: list[Tensor | None] = [None] * len(params)
        if self.momentum != 0:
            buffers = list(slots["momentum"])
            if self.dampening != 0:
                # torch starts the buffer at the first gradient (no dampening); a zero buffer
                # is only equivalent when dampening == 0, so mirror its lazy initialisation.
                buffers = [None if float(c) == 0 else b for b, c in zip(buffers, counts, strict=True)]
        _torch_sgd(
            params,
            grads,
            buffers,
            foreach=None,
            fused=None,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=self.dampening,
            nesterov=self.nesterov,
            maximize=self.maximize,
        )
        if self.momentum != 0:
            slots["momentum"][:] = buffers
        for c in counts:
            c.add_(1)


def sgd(
    lr: float,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    maximize: bool = False,
) -> SGD:
    """Stochastic gradient descent, numerically ``torch.optim.SGD`` with the same arguments.

    The momentum buffer starts at zero; with ``dampening == 0`` this equals
    torch's "buffer = first gradient" exactly, and with ``dampening != 0``
    the first step of each leaf initialises the buffer as torch does.
    """
    return SGD(lr, momentum, weight_decay, nesterov, dampening, maximize)


# --------------------------------------------------------------------------- Adam / AdamW


@dataclasses.dataclass(frozen=True)
class Adam(Optimizer):
    """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``True``) as a pure optimizer."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    decoupled: bool = False
    maximize: bool = False

    _state_cls: ClassVar[type[Any]] = AdamState

    def __post_init__(self) -> None:
        _check_float("lr", self.lr)
        _check_float("eps", self.eps)
        _check_float("weight_decay", self.weight_decay)
        if not isinstance(self.betas, Sequence) or len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {self.betas!r}")
        _check_float("betas[0]", self.betas[0], high=1.0, high_open=True)
        _check_float("betas[1]", self.betas[1], high=1.0, high_open=True)
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))

    def _slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def _kernel(self, params: list[Tensor], grads: list[Tensor], slots: dict[str, list[Any]], counts: list[Tensor]) -> None:
        _torch_adam(
            params,
            grads,
            slots["exp_avg"],
            slots["exp_avg_sq"],
            slots.get("max_exp_avg_sq", []),
            counts,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
            has_complex=any(torch.is_complex(p) for p in params),
            decoupled_weight_decay=self.decoupled,
            amsgrad=self.amsgrad,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=self.maximize,
        )


def adam(
    lr: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
) -> Adam:
    """Adam with L2 weight decay added to the gradient, numerically ``torch.optim.Adam``."""
    return Adam(lr, tuple(betas), eps, weight_decay, amsgrad, False, maximize)  # type: ignore[arg-type]


def adamw(
    lr: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    amsgrad: bool = False,
    maximize: bool = False,
) -> Adam:
    """Adam with decoupled weight decay, numerically ``torch.optim.AdamW``."""
    return Adam(lr, tuple(betas), eps, weight_decay, amsgrad, True, maximize)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- structure changes


def reinit_like(opt: Optimizer, state: Any, params: Tree, *, reset: Mask = None) -> Any:
    """A state for ``params`` (new structure) that keeps what survives from ``state``.

    For every leaf of ``params`` whose path also exists in ``state`` with a
    state of the same shape, dtype and device, all of that leaf's state
    (count, moments, buffers) is carried over (copied); every other leaf
    (a newly germinated seed, a re-shaped tensor) gets ``opt.init`` state.
    State of paths no longer in ``params`` (a removed seed) is dropped.

    ``reset`` is a prefix tree of bools like ``update``'s mask, but with
    default ``False``: leaves under ``True`` are re-initialised even if
    their path survives (e.g. a slot whose seed was pruned and a new seed of
    the same blueprint germinated in its place).

    Pure: ``state`` and ``params`` are not modified; no returned tensor aliases them.
    """
    if not isinstance(opt, Optimizer):
        raise TypeError(f"opt must be an esper_func optimizer; got {type(opt).__name__}")
    if type(state) is not opt._state_cls:
        raise TypeError(f"{type(opt).__name__} needs a {opt._state_cls.__name__}; got {type(state).__name__}")
    names = ("count", *opt._slots())
    old: dict[tuple[Any, ...], dict[str, Tensor]] = {}
    count_paths, _, _ = _flatten(state.count, "state.count")
    columns = {}
    for name in names:
        field_paths, field_leaves, _ = _flatten(getattr(state, name), f"state.{name}")
        if field_paths != count_paths:
            raise ParamsMismatchError(f"state.{name} and state.count have different structures; the state is corrupt")
        columns[name] = field_leaves
    for i, path in enumerate(count_paths):
        old[path] = {name: columns[name][i] for name in names}

    paths, leaves, spec = _flatten(params, "params")
    resets = _leaf_mask(reset, params, paths, default=False)
    per_leaf = []
    for path, p, fresh in zip(paths, leaves, resets, strict=True):
        leaf = opt._init_leaf(p)
        kept = old.get(path)
        if kept is not None and not fresh and all(
            kept[n].shape == leaf[n].shape and kept[n].dtype == leaf[n].dtype and kept[n].device == leaf[n].device
            for n in names
        ):
            leaf = {n: _fresh(kept[n]) for n in names}
        per_leaf.append(leaf)
    return opt._build_state(spec, per_leaf)


def state_to_tree(state: SGDState | AdamState) -> dict[str, Tree]:
    """The state's fields as a plain dict ``{field: tree}`` (``None`` fields left out), for checkpoints.

    Shares tensors with ``state`` (a restructuring, no copy).
    """
    if not isinstance(state, (SGDState, AdamState)):
        raise TypeError(f"expected an SGDState or AdamState; got {type(state).__name__}")
    fields = dataclasses.fields(state)
    return {f.name: getattr(state, f.name) for f in fields if getattr(state, f.name) is not None}


def state_from_tree(opt: Optimizer, tree: Mapping[str, Tree], params: Tree) -> Any:
    """Rebuild ``opt``'s state for ``params`` from :func:`state_to_tree`'s dict (e.g. a loaded checkpoint).

    Each tensor is checked against what ``opt.init(params)`` would make
    (structure, shape, dtype) and moved to that tensor's device.

    Raises:
        ParamsMismatchError: missing or unexpected fields, a subtree that
            does not have the structure of ``params``.
        ShapeError / DTypeError: a tensor of the wrong shape or dtype.
    """
    if not isinstance(tree, Mapping):
        raise TypeError(f"tree must be a dict of state fields; got {type(tree).__name__}")
    template = opt.init(params)
    want = set(state_to_tree(template))
    if set(tree) != want:
        raise ParamsMismatchError(
            f"{type(opt).__name__} state fields are {sorted(want)}; got {sorted(tree)} "
            f"(missing {sorted(want - set(tree))}, unexpected {sorted(set(tree) - want)})"
        )
    paths, _, spec = _flatten(params, "params")
    fields: dict[str, Any] = {f.name: None for f in dataclasses.fields(template)}
    for name in want:
        ref = spec.flatten_up_to(getattr(template, name))
        got = _leaves_like(spec, paths, tree[name], f"state.{name}")
        moved = []
        for path, r, g in zip(paths, ref, got, strict=True):
            if g.shape != r.shape:
                raise ShapeError(f"state.{name}{_fmt(path)} has shape {tuple(g.shape)}, expected {tuple(r.shape)}")
            if g.dtype != r.dtype:
                raise DTypeError(f"state.{name}{_fmt(path)} has dtype {g.dtype}, expected {r.dtype}")
            moved.append(g.to(r.device))
        fields[name] = optree.tree_unflatten(spec, moved)
    return type(template)(**fields)
