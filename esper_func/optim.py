"""Pure optimizers over parameter trees (optax style, PyTorch's arithmetic).

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
    * **Pure.** ``update`` never modifies ``grads``, ``state`` or ``params``.
      The arithmetic is out-of-place ``torch._foreach_*`` over the leaves
      that train: every parameter and state tensor of a trained leaf is a new
      tensor; a frozen leaf's tensors are returned as they were (the very
      same tensor objects, never written to). Returned parameters keep each
      input parameter's ``requires_grad`` flag.
    * **Same numbers as ``torch.optim``.** The update rules are
      ``torch.optim.SGD``'s and ``Adam``/``AdamW``'s (single-tensor and
      foreach implementations), operation for operation; a sequence of
      updates matches the stateful optimizer step for step (SGD bitwise on
      CPU; Adam to float rounding, its bias corrections are computed from the
      per-leaf step counters as float64 tensors rather than Python floats).
    * **No host synchronisation.** Nothing reads a tensor's value back to
      Python, so ``update`` can run inside ``torch.compile`` and, on a GPU,
      queue its kernels without waiting. Step counters are CPU tensors.
    * **Per-leaf step counters.** ``state.count`` holds one 0-d ``float32``
      tensor per parameter (as ``torch.optim.Adam`` keeps ``step``), so a
      frozen leaf keeps its own count and Adam's bias correction stays right
      for leaves that trained for fewer steps.

Learning rates
    ``lr`` is a Python float or a 0-d floating tensor. Under
    ``torch.compile`` either kind is a graph input rather than a constant,
    so building a new optimizer with another rate (a schedule) does not
    recompile a compiled step (a float may be specialised once by
    Dynamo's automatic dynamic shapes when it is first seen to change; a 0-d tensor never is).
    Other hyperparameters are Python floats: changing them recompiles.

Masks (``update(..., mask=...)``)
    ``mask`` is a *prefix tree* of Python bools over ``params``: a bool at
    some node applies to every leaf below it; dicts (and lists/tuples) are
    followed key by key; a key absent from the mask means ``True``. For
    example ``{"host": True, "slots": {"r0c0": False}}`` trains the host and
    every slot except ``r0c0``. A callable ``mask(params) -> tree`` is also
    accepted. Keys in the mask that ``params`` does not have are ignored (a
    mask may name slots that hold no seed).

    A leaf whose mask is ``False`` is *frozen for this step*: its parameter
    is returned unchanged and so is every piece of its optimizer state
    (moments, momentum buffer, step count), and no arithmetic runs for it.
    No weight decay, no moment decay, no count advance: it is as if the leaf
    was not in the optimizer this step. A leaf whose gradient is ``None`` is
    treated the same way (as ``torch.optim`` skips parameters whose
    ``.grad`` is ``None``). This is what the blend-out of a seed that is
    being faded out needs: its weights and state stay exactly where they
    were while alpha falls.

Structure changes
    Germinating or removing a seed changes the structure of ``params``;
    :func:`reinit_like` builds a state for the new structure, keeping the
    state of every leaf that survives.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import optree
import torch
import torch.utils._pytree as torch_pytree
from torch import Tensor

from esper_func._pytree import NAMESPACE, pytree_dataclass
from esper_func.errors import DTypeError, InvalidArgumentError, InvalidTypeError, ParamsMismatchError, ShapeError

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
LearningRate = float | Tensor
Tensors = list[Tensor] | tuple[Tensor, ...]  # lists in; torch._foreach_* returns tuples

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


class _Flat:
    """One flattening of ``params`` that every other tree of the call is matched against.

    Eagerly :mod:`optree` (C++; dict keys sorted); under ``torch.compile``
    ``torch.utils._pytree``, which Dynamo traces natively. Every tree of one
    call is flattened by the same library and matched by key (never zipped
    by position across libraries).
    """

    def __init__(self, tree: Tree) -> None:
        self.compiling = torch.compiler.is_compiling()
        self.spec: Any
        if self.compiling:
            self.leaves, self.spec = torch_pytree.tree_flatten(tree)
        else:
            self.leaves, self.spec = optree.tree_flatten(tree, namespace=NAMESPACE)
        self._paths: list[tuple[Any, ...]] | None = None

    @property
    def paths(self) -> list[tuple[Any, ...]]:
        if self._paths is None:
            if self.compiling:
                self._paths = [tuple(_key_of(k) for k in path) for path, _ in torch_pytree.tree_flatten_with_path(
                    torch_pytree.tree_unflatten(self.leaves, self.spec))[0]]
            else:
                self._paths = [tuple(p) for p in self.spec.paths()]
        return self._paths

    def match(self, tree: Tree) -> list[Any]:
        """The leaves of ``tree`` in this flattening's order (raises ``ValueError``/``TypeError`` on mismatch)."""
        return list(self.spec.flatten_up_to(tree))

    def unflatten(self, leaves: list[Any]) -> Tree:
        if self.compiling:
            return torch_pytree.tree_unflatten(leaves, self.spec)
        return optree.tree_unflatten(self.spec, leaves)


def _key_of(entry: Any) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def _check_leaves(flat: _Flat, leaves: Sequence[Any], what: str, *, allow_none: bool = False) -> None:
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, Tensor) and not (allow_none and leaf is None):
            raise DTypeError(f"{what}{_fmt(flat.paths[i])} must be a tensor; got {type(leaf).__name__}")


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


def _leaves_like(flat: _Flat, tree: Tree, what: str, hint: str = "", *, allow_none: bool = False) -> list[Any]:
    """The leaves of ``tree`` in ``flat``'s order, checking that the structures agree."""
    try:
        leaves = flat.match(tree)
    except (ValueError, TypeError):
        raise _structure_mismatch(what, flat.paths, tree, hint) from None
    _check_leaves(flat, leaves, what, allow_none=allow_none)
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
            raise InvalidTypeError(
                f"mask{_fmt(path[:depth])} must be a bool, a dict or a list of masks; got {type(node).__name__}"
            )
    if isinstance(node, bool):
        return node
    raise InvalidTypeError(
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
    return new.requires_grad_(True) if like.requires_grad else new


def _check_float(name: str, value: float, *, low: float = 0.0, high: float | None = None, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number; got {value!r}")
    if value < low or (high is not None and (value >= high if high_open else value > high)):
        bound = f"[{low}, {high})" if high_open else (f"[{low}, {high}]" if high is not None else f">= {low}")
        raise InvalidArgumentError(f"{name} must be in {bound}; got {value!r}")


def _check_lr(lr: LearningRate) -> None:
    if isinstance(lr, Tensor):
        if lr.ndim != 0 or not lr.is_floating_point():
            raise InvalidArgumentError(f"a tensor lr must be a 0-d floating-point tensor; got shape {tuple(lr.shape)}, {lr.dtype}")
        if lr.requires_grad:
            raise InvalidArgumentError("a tensor lr must not require grad")
        _check_float("lr", float(lr))  # once, at construction
        return
    _check_float("lr", lr)


# --------------------------------------------------------------------------- foreach arithmetic


def _scaled(xs: Tensors, scale: Any) -> Tensors:
    """``[x * scale]``: new tensors."""
    return torch._foreach_mul(xs, scale)


def _add_scaled(ys: Tensors, xs: Tensors, scale: Any) -> Tensors:
    """``[y + scale * x]``: new tensors; one fused kernel per leaf when ``scale`` is a plain number.

    Under ``torch.compile`` (or for a tensor ``scale``) the product is a
    separate op, so a float ``scale`` is a graph input rather than a constant
    the graph is specialised on (Dynamo guards on ``alpha=`` arguments).
    """
    if isinstance(scale, Tensor) or torch.compiler.is_compiling():
        return torch._foreach_add(ys, torch._foreach_mul(xs, scale))
    return torch._foreach_add(ys, xs, alpha=scale)


def _as_real(ts: Tensors) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in ts]


def _like_complex(ts: Tensors, like: Tensors) -> list[Tensor]:
    return [torch.view_as_complex(t) if ref.is_complex() else t for t, ref in zip(ts, like, strict=True)]


# --------------------------------------------------------------------------- optimizer base


class Optimizer(abc.ABC):
    """A pure optimizer: frozen hyperparameters plus ``init`` and ``update``.

    Subclasses are frozen dataclasses; they name their per-leaf state
    (``_slots``: state field names besides ``count``), build it
    (``_init_slot``) and compute one step out of place on lists of the
    trained leaves (``_apply``). Masking, validation and reassembly live here.
    """

    _state_cls: ClassVar[type[Any]]

    @abc.abstractmethod
    def _slots(self) -> tuple[str, ...]: ...

    @abc.abstractmethod
    def _apply(
        self, params: Tensors, grads: Tensors, slots: dict[str, Tensors], counts: Tensors
    ) -> tuple[Tensors, dict[str, Tensors], Tensors]:
        """One step for the given (trained) leaves: ``(new_params, new_slots, new_counts)``, all new tensors.

        Real tensors only (complex leaves arrive as ``view_as_real``); runs under ``torch.no_grad``.
        """

    def _init_slot(self, name: str, param: Tensor) -> Tensor:
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    def _init_leaf(self, param: Tensor) -> dict[str, Tensor]:
        leaf = {"count": torch.zeros((), dtype=_COUNT_DTYPE)}
        for name in self._slots():
            leaf[name] = self._init_slot(name, param.detach())
        return leaf

    def _build_state(self, flat: _Flat, columns: Mapping[str, list[Tensor]]) -> Any:
        fields: dict[str, Any] = {f.name: None for f in dataclasses.fields(self._state_cls)}
        for name, column in columns.items():
            fields[name] = flat.unflatten(column)
        return self._state_cls(**fields)

    def _check_state_type(self, state: Any) -> None:
        if not isinstance(state, self._state_cls):
            raise InvalidTypeError(
                f"{type(self).__name__} needs a {self._state_cls.__name__}; got {type(state).__name__} "
                f"(was the state made by another optimizer?)"
            )

    def _step_leaves(
        self, params: Tensors, grads: Tensors, columns: Mapping[str, Tensors]
    ) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
        """Update the given leaves (every one trains): ``(new_params, new_columns)``; pure.

        ``columns`` maps ``"count"`` and each of :meth:`_slots` to the leaves'
        state tensors, in the order of ``params``. The fast path of
        :func:`esper_func.train.train_step`, which knows its tree layout and
        has validated it; :meth:`update` is the checked, tree-level entry point.
        """
        if not params:
            return [], {name: [] for name in columns}
        names = self._slots()
        with torch.no_grad():
            complex_ = any(p.is_complex() for p in params)
            p_in = _as_real(params) if complex_ else list(params)
            g_in = _as_real([g.detach() for g in grads]) if complex_ else [g.detach() for g in grads]
            slots: dict[str, Tensors] = {n: (_as_real(columns[n]) if complex_ else list(columns[n])) for n in names}
            out_params, out_slots, out_counts = self._apply(p_in, g_in, slots, list(columns["count"]))
            if complex_:
                out_params = _like_complex(out_params, params)
                out_slots = {n: _like_complex(v, params) for n, v in out_slots.items()}
        new_params = [_as_param(n, p) for n, p in zip(out_params, params, strict=True)]
        return new_params, {"count": list(out_counts), **{n: list(v) for n, v in out_slots.items()}}

    def init(self, params: Tree) -> Any:
        """A fresh state for ``params``: zero counts, zero moments/buffers (reads ``params`` only)."""
        flat = _Flat(params)
        _check_leaves(flat, flat.leaves, "params")
        per_leaf = [self._init_leaf(p) for p in flat.leaves]
        return self._build_state(flat, {n: [leaf[n] for leaf in per_leaf] for n in ("count", *self._slots())})

    def update(self, grads: Tree, state: Any, params: Tree, *, mask: Mask = None) -> tuple[Tree, Any]:
        """One optimizer step: ``(new_params, new_state)``; pure, no host synchronisation.

        Args:
            grads: gradients, same structure as ``params``; a ``None`` leaf
                means "no gradient": that leaf is frozen this step.
            state: the state from :meth:`init` or a previous :meth:`update`.
            params: current parameters.
            mask: optional prefix tree of bools; ``False`` freezes a subtree
                (parameters and state returned unchanged, see the module doc).

        Raises:
            ParamsMismatchError: ``grads`` or ``state`` do not have the
                structure of ``params`` (the message lists missing and
                unexpected paths).
            ShapeError: a gradient's shape differs from its parameter's.
            DTypeError: a leaf is not a tensor, or a gradient's dtype or
                device differs from its parameter's.
        """
        flat = _Flat(params)
        leaves = flat.leaves
        _check_leaves(flat, leaves, "params")
        grad_leaves = _leaves_like(flat, grads, "grads", allow_none=True)
        for i, (p, g) in enumerate(zip(leaves, grad_leaves, strict=True)):
            if g is None:
                continue
            if g.shape != p.shape:
                raise ShapeError(f"grads{_fmt(flat.paths[i])} has shape {tuple(g.shape)} but the parameter has {tuple(p.shape)}")
            if g.dtype != p.dtype or g.device != p.device:
                raise DTypeError(
                    f"grads{_fmt(flat.paths[i])} is {g.dtype} on {g.device} but the parameter is {p.dtype} on {p.device}"
                )
        self._check_state_type(state)
        hint = "; after germinating or removing a seed, rebuild the state with ef.optim.reinit_like(opt, state, params)"
        names = ("count", *self._slots())
        columns = {name: _leaves_like(flat, getattr(state, name), f"state.{name}", hint) for name in names}
        masked = [True] * len(leaves) if mask is None else _leaf_mask(mask, params, flat.paths)
        idx = [i for i, (m, g) in enumerate(zip(masked, grad_leaves, strict=True)) if m and g is not None]

        new_leaves = list(leaves)
        new_columns = {name: list(col) for name, col in columns.items()}
        if idx:
            trained, trained_columns = self._step_leaves(
                [leaves[i] for i in idx],
                [grad_leaves[i] for i in idx],
                {name: [col[i] for i in idx] for name, col in columns.items()},
            )
            for j, i in enumerate(idx):
                new_leaves[i] = trained[j]
                for name in names:
                    new_columns[name][i] = trained_columns[name][j]
        return flat.unflatten(new_leaves), self._build_state(flat, new_columns)


# --------------------------------------------------------------------------- SGD


@dataclasses.dataclass(frozen=True)
class SGD(Optimizer):
    """``torch.optim.SGD`` as a pure optimizer; build with :func:`sgd`."""

    lr: LearningRate
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    maximize: bool = False

    _state_cls: ClassVar[type[Any]] = SGDState

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        _check_float("momentum", self.momentum)
        _check_float("weight_decay", self.weight_decay)
        _check_float("dampening", self.dampening)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise InvalidArgumentError(
                f"nesterov momentum requires momentum > 0 and dampening == 0; got momentum={self.momentum}, "
                f"dampening={self.dampening}"
            )

    def _slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum != 0 else ()

    def _apply(
        self, params: Tensors, grads: Tensors, slots: dict[str, Tensors], counts: Tensors
    ) -> tuple[Tensors, dict[str, Tensors], Tensors]:
        # torch.optim.sgd, step for step: d = g + wd * p; buf = m * buf + (1 - dampening) * d
        # (buf = d on a leaf's first step); d = d + m * buf (nesterov) or buf; p = p - lr * d.
        d: Tensors = torch._foreach_neg(grads) if self.maximize else grads
        if self.weight_decay != 0:
            d = torch._foreach_add(d, params, alpha=self.weight_decay)
        new_slots: dict[str, Tensors] = {}
        if self.momentum != 0:
            bufs: Tensors = torch._foreach_mul(slots["momentum"], self.momentum)
            torch._foreach_add_(bufs, d, alpha=1.0 - self.dampening)
            if self.dampening != 0:
                # torch starts the buffer at the first gradient, undamped; a zero buffer
                # is only equivalent when dampening == 0. A tensor condition: no sync.
                bufs = [torch.where(c == 0, g, b) for b, g, c in zip(bufs, d, counts, strict=True)]
            new_slots["momentum"] = bufs
            d = torch._foreach_add(d, bufs, alpha=self.momentum) if self.nesterov else bufs
        new_params = _add_scaled(params, d, -self.lr)
        return new_params, new_slots, torch._foreach_add(counts, 1.0)


def sgd(
    lr: LearningRate,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    maximize: bool = False,
) -> SGD:
    """Stochastic gradient descent, numerically ``torch.optim.SGD`` with the same arguments.

    ``lr`` may be a 0-d tensor (see the module doc). The momentum buffer
    starts at zero; with ``dampening == 0`` this equals torch's "buffer =
    first gradient" exactly, and with ``dampening != 0`` the first step of
    each leaf initialises the buffer as torch does.
    """
    return SGD(lr, momentum, weight_decay, nesterov, dampening, maximize)


# --------------------------------------------------------------------------- Adam / AdamW


@dataclasses.dataclass(frozen=True)
class Adam(Optimizer):
    """``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``True``) as a pure optimizer."""

    lr: LearningRate
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    decoupled: bool = False
    maximize: bool = False

    _state_cls: ClassVar[type[Any]] = AdamState

    def __post_init__(self) -> None:
        _check_lr(self.lr)
        _check_float("eps", self.eps)
        _check_float("weight_decay", self.weight_decay)
        if not isinstance(self.betas, Sequence) or len(self.betas) != 2:
            raise InvalidArgumentError(f"betas must be a pair (beta1, beta2); got {self.betas!r}")
        _check_float("betas[0]", self.betas[0], high=1.0, high_open=True)
        _check_float("betas[1]", self.betas[1], high=1.0, high_open=True)
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))

    def _slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def _apply(
        self, params: Tensors, grads: Tensors, slots: dict[str, Tensors], counts: Tensors
    ) -> tuple[Tensors, dict[str, Tensors], Tensors]:
        # torch.optim.adam, step for step (see _single_tensor_adam / _multi_tensor_adam).
        beta1, beta2 = self.betas
        lr = self.lr
        g: Tensors = torch._foreach_neg(grads) if self.maximize else grads
        new_counts = torch._foreach_add(counts, 1.0)
        if self.weight_decay != 0:
            if self.decoupled:
                params = _scaled(params, 1.0 - lr * self.weight_decay)
            else:
                g = torch._foreach_add(g, params, alpha=self.weight_decay)
        exp_avg = torch._foreach_lerp(slots["exp_avg"], g, 1.0 - beta1)
        exp_avg_sq = torch._foreach_mul(slots["exp_avg_sq"], beta2)
        torch._foreach_addcmul_(exp_avg_sq, g, g, value=1.0 - beta2)
        new_slots: dict[str, Tensors] = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second = exp_avg_sq
        if self.amsgrad:
            second = torch._foreach_maximum(slots["max_exp_avg_sq"], exp_avg_sq)
            new_slots["max_exp_avg_sq"] = second
        # Bias corrections from the per-leaf counters, as float64 tensors (torch uses Python
        # floats read back from its step tensors: a host sync per leaf).
        steps = torch.stack(new_counts).double()
        neg_step_size = -lr / (1.0 - torch.pow(beta1, steps))
        bias_correction2_sqrt = (1.0 - torch.pow(beta2, steps)).sqrt()
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, _per_leaf(bias_correction2_sqrt, params))
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_mul(exp_avg, _per_leaf(neg_step_size, params))
        torch._foreach_div_(update, denom)
        return torch._foreach_add(params, update), new_slots, new_counts


def _per_leaf(values: Tensor, like: Tensors) -> list[Tensor]:
    """``values[i]`` as a 0-d CPU tensor in the dtype of ``like[i]``.

    The scalars stay on the CPU (where the step counters live): a 0-d CPU
    tensor is a scalar operand for tensors on any device, so no copy to an
    accelerator (and no synchronisation) happens per step.
    """
    dtype = like[0].dtype
    if all(t.dtype == dtype for t in like):
        return list(values.to(dtype=dtype).unbind())
    return [v.to(dtype=t.dtype) for v, t in zip(values.unbind(), like, strict=True)]


def adam(
    lr: LearningRate,
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
    lr: LearningRate,
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
        raise InvalidTypeError(f"opt must be an esper_func optimizer; got {type(opt).__name__}")
    if type(state) is not opt._state_cls:
        raise InvalidTypeError(f"{type(opt).__name__} needs a {opt._state_cls.__name__}; got {type(state).__name__}")
    names = ("count", *opt._slots())
    old: dict[tuple[Any, ...], dict[str, Tensor]] = {}
    count_paths, _ = _paths_and_leaves(state.count, "state.count")
    columns = {}
    for name in names:
        field_paths, field_leaves = _paths_and_leaves(getattr(state, name), f"state.{name}")
        if field_paths != count_paths:
            raise ParamsMismatchError(f"state.{name} and state.count have different structures; the state is corrupt")
        columns[name] = field_leaves
    for i, path in enumerate(count_paths):
        old[path] = {name: columns[name][i] for name in names}

    flat = _Flat(params)
    _check_leaves(flat, flat.leaves, "params")
    resets = _leaf_mask(reset, params, flat.paths, default=False)
    per_leaf = []
    for path, p, fresh in zip(flat.paths, flat.leaves, resets, strict=True):
        leaf = opt._init_leaf(p)
        kept = old.get(path)
        if kept is not None and not fresh and all(
            kept[n].shape == leaf[n].shape and kept[n].dtype == leaf[n].dtype and kept[n].device == leaf[n].device
            for n in names
        ):
            leaf = {n: _fresh(kept[n]) for n in names}
        per_leaf.append(leaf)
    return opt._build_state(flat, {n: [leaf[n] for leaf in per_leaf] for n in names})


def _paths_and_leaves(tree: Tree, what: str) -> tuple[list[tuple[Any, ...]], list[Tensor]]:
    paths, leaves, _ = optree.tree_flatten_with_path(tree, namespace=NAMESPACE)
    for path, leaf in zip(paths, leaves, strict=True):
        if not isinstance(leaf, Tensor):
            raise DTypeError(f"{what}{_fmt(path)} must be a tensor; got {type(leaf).__name__}")
    return [tuple(p) for p in paths], leaves


def state_to_tree(state: SGDState | AdamState) -> dict[str, Tree]:
    """The state's fields as a plain dict ``{field: tree}`` (``None`` fields left out), for checkpoints.

    Shares tensors with ``state`` (a restructuring, no copy).
    """
    if not isinstance(state, (SGDState, AdamState)):
        raise InvalidTypeError(f"expected an SGDState or AdamState; got {type(state).__name__}")
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
        raise InvalidTypeError(f"tree must be a dict of state fields; got {type(tree).__name__}")
    template = opt.init(params)
    want = set(state_to_tree(template))
    if set(tree) != want:
        raise ParamsMismatchError(
            f"{type(opt).__name__} state fields are {sorted(want)}; got {sorted(tree)} "
            f"(missing {sorted(want - set(tree))}, unexpected {sorted(set(tree) - want)})"
        )
    flat = _Flat(params)
    fields: dict[str, Any] = {f.name: None for f in dataclasses.fields(template)}
    for name in want:
        ref = flat.match(getattr(template, name))
        got = _leaves_like(flat, tree[name], f"state.{name}")
        moved = []
        for path, r, g in zip(flat.paths, ref, got, strict=True):
            if g.shape != r.shape:
                raise ShapeError(f"state.{name}{_fmt(path)} has shape {tuple(g.shape)}, expected {tuple(r.shape)}")
            if g.dtype != r.dtype:
                raise DTypeError(f"state.{name}{_fmt(path)} has dtype {g.dtype}, expected {r.dtype}")
            moved.append(g.to(r.device))
        fields[name] = flat.unflatten(moved)
    return type(template)(**fields)
