"""A pure training step over the functional model.

:class:`TrainState` is a pytree of everything that changes while training:
parameters, buffers, optimizer state, the lifecycle state of every slot,
the step counter and an RNG key. :func:`train_step` maps one state to the
next and never mutates its inputs; keeping the old state *is* the rollback.

The step is a pure tensor function with a thin Python shell:

1. *static inputs*, read from the lifecycle states: the alpha vector (a
   tensor) and which routed seeds train this step (Python bools: structure);
2. *the numeric step*: the forward in training mode, gradients, the
   optimizer update and the gradient telemetry, all tensor arithmetic with
   no host synchronisation;
3. *the next state*: the new tensors, the step counter advanced.

Under ``torch.compile`` the first and last parts run eagerly (they are
``torch.compiler.disable``d), so the compiled step never guards on a
lifecycle float or on the step counter: changing alphas, data or the
learning rate does not recompile it; a change of structure (a seed added,
removed, or changing stage, a seed starting to blend out) does. The
numeric step is two graphs: the forward, whose inputs require grad so that
AOTAutograd compiles its backward with it, and the telemetry plus the
update; between them the gradient call runs the compiled backward::

    step = torch.compile(lambda state, batch: ef.train_step(model, state, batch, optimizer=opt, loss_fn=loss))

Per-slot update masks come from the lifecycle: a seed whose controller is
ramping alpha down (``ef.trainable(state)`` is false), a seed that is not in
the forward pass (GERMINATED) and an empty slot get no update, not even
weight decay (their tensors pass through untouched).

Gradient telemetry stays tensors in :class:`StepMetrics`: the host's
gradient norm and, per seed in the forward pass, its gradient norm and
health (:func:`esper_func.lifecycle.measure.gradient_health`). The lifecycle
bookkeeping happens outside the step: :func:`record_step_gradients` folds a
step's telemetry into the seed states (the epoch loop does it once per
epoch, with the last step's, as esper-lite does).

Data parallelism plugs in through a :class:`Reducer`: gradients (and the
BatchNorm running statistics) are averaged across ranks before anything
reads them, so every rank computes the same update from the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.counterfactual import flatten_tokens
from esper_func.errors import DTypeError, InvalidTypeError, ShapeError, UnknownSlotError
from esper_func.lifecycle import SeedState, record_gradients, trainable
from esper_func.lifecycle.measure import GradientHealth, gradient_health
from esper_func.model import Buffers, Model, Params, apply, call_module, check_input, check_tree, model_cache
from esper_func.optim import Optimizer

__all__ = [
    "LocalReducer",
    "LossFn",
    "Reducer",
    "StepMetrics",
    "TrainState",
    "init_train_state",
    "record_step_gradients",
    "train_step",
    "update_mask",
]

#: ``loss_fn(logits, targets) -> scalar mean loss``, e.g. ``torch.nn.functional.cross_entropy``;
#: called on ``flatten_tokens(output, targets)`` (``[N, V]`` and ``[N]``).
LossFn = Callable[[Tensor, Tensor], Tensor]


class Reducer(Protocol):
    """How values are combined across data-parallel ranks (identity on one process)."""

    def mean(self, tree: Any) -> Any:
        """The mean over ranks of every tensor in ``tree`` (same structure)."""

    def sum(self, tree: Any) -> Any:
        """The sum over ranks of every tensor in ``tree`` (same structure)."""


class LocalReducer:
    """The single-process :class:`Reducer`: returns its input."""

    def mean(self, tree: Any) -> Any:
        return tree

    def sum(self, tree: Any) -> Any:
        return tree


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
        params, buffers: the model's tensors (see :func:`esper_func.build_model`).
        opt_state: the optimizer's state for ``params``.
        seeds: lifecycle state per slot id; a slot that never held a seed has no entry.
        step: optimizer steps taken.
        key: the run's RNG key; step ``s`` draws its randomness (dropout) from
            ``(key, s)``, so a resumed run repeats it exactly.
    """

    params: Params
    buffers: Buffers
    opt_state: Any
    seeds: dict[str, SeedState]
    step: int = 0
    key: int = static_field(default=0)


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """What one step measured, as tensors (already reduced across ranks; nothing read back to the host).

    Attributes:
        loss: the batch's mean loss, 0-d.
        accuracy: the fraction of argmax hits, 0-d.
        host_grad_norm: global L2 norm of the host's gradients, 0-d float32.
        seed_leaf_norms: per seed in the forward pass (``model.routed``), the
            L2 norm of each of its gradient tensors, ``[n_tensors]`` float64
            (esper-lite's per-layer gradient statistics).

    :attr:`seed_health` and :attr:`seed_grad_norms` derive the per-seed
    telemetry from these (tensors too). Non-finite values are kept as they
    are. Convert with ``float()`` when logging, once per epoch rather than
    per step.
    """

    loss: Tensor
    accuracy: Tensor
    host_grad_norm: Tensor
    seed_leaf_norms: dict[str, Tensor]

    @property
    def seed_health(self) -> dict[str, GradientHealth]:
        """Per routed seed, :func:`~esper_func.lifecycle.measure.gradient_health` of its gradients.

        Computed from the per-tensor norms (the health formula only reads
        those), so it equals ``gradient_health(grads_of_that_seed)``.
        """
        return {sid: gradient_health(list(norms.unbind())) for sid, norms in self.seed_leaf_norms.items()}

    @property
    def seed_grad_norms(self) -> dict[str, Tensor]:
        """Per routed seed, the global L2 norm of its gradients (float64, 0-d)."""
        return {sid: norms.square().sum().sqrt() for sid, norms in self.seed_leaf_norms.items()}


def init_train_state(
    model: Model,
    params: Params,
    buffers: Buffers,
    *,
    optimizer: Optimizer,
    seeds: Mapping[str, SeedState] | None = None,
    key: int = 0,
) -> TrainState:
    """A fresh :class:`TrainState` (optimizer state from ``optimizer.init``).

    Raises:
        ParamsMismatchError: ``params``/``buffers`` do not fit ``model``.
        UnknownSlotError: ``seeds`` names a slot the model does not have.
    """
    check_tree(model, params, buffers)
    seeds = dict(seeds or {})
    unknown = sorted(str(sid) for sid in seeds if sid not in model.slot_order)
    if unknown:
        raise UnknownSlotError(f"seeds name slots {unknown} that the model does not have; its slots: {list(model.slot_order)}")
    return TrainState(params, buffers, optimizer.init(params), seeds, 0, int(key))


def update_mask(model: Model, seeds: Mapping[str, SeedState]) -> dict[str, Any]:
    """The optimizer mask: the host trains; a seed trains when it runs and is not blending out."""
    routed = model.routed
    slots = {}
    for slot_id in model.seeded:
        state = seeds.get(slot_id)
        slots[slot_id] = slot_id in routed and state is not None and trainable(state)
    return {"host": True, "slots": slots}


# --------------------------------------------------------------------------- the step


def train_step(
    model: Model,
    state: TrainState,
    batch: tuple[Tensor, Tensor],
    *,
    optimizer: Optimizer,
    loss_fn: LossFn,
    reducer: Reducer | None = None,
) -> tuple[TrainState, StepMetrics]:
    """One optimizer step: ``(new_state, metrics)``; pure, no host synchronisation.

    The forward runs in training mode with the alphas of ``state.seeds``;
    gradients (and BatchNorm statistics) are averaged by ``reducer`` before
    the update and before the telemetry is measured, so with a distributed
    reducer every rank ends the step with identical values. ``state.seeds``
    is returned as it was: fold the telemetry in with
    :func:`record_step_gradients` when the loop needs it.

    Compiles with ``torch.compile`` (see the module docstring); dropout with
    a non-zero rate draws from a ``torch.Generator`` and runs eagerly only.
    """
    reducer = reducer or LocalReducer()
    x, y = _check_batch(model, state, batch, loss_fn)
    if torch.compiler.is_compiling():
        layout, inputs, alphas, trains, rng, optimizer = _static_inputs_eagerly(model, state, x.device, optimizer, True)
    else:
        try:
            layout, inputs, alphas, trains, rng, optimizer = _static_inputs(model, state, x.device, optimizer, False)
        except (KeyError, TypeError, AttributeError):
            # The per-step path does not re-validate the trees (overhead); on failure, say what does not fit.
            check_tree(model, state.params, state.buffers)
            raise
    params, buffers, opt_state, metrics = _numeric_step(
        model, layout, state.params, state.buffers, state.opt_state, inputs, alphas, x, y,
        trains=trains, rng=rng, optimizer=optimizer, loss_fn=loss_fn, reducer=reducer,
    )
    advance = _advance_eagerly if torch.compiler.is_compiling() else _advance
    return advance(state, params, buffers, opt_state), metrics


def _check_batch(model: Model, state: TrainState, batch: Any, loss_fn: Any) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` of ``batch``, or an error naming what is wrong (static checks only: no values read)."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise InvalidTypeError(f"batch must be a pair (inputs, targets) of tensors; got {got}")
    x, y = batch
    check_input(model, state.params, x, where="batch inputs")
    if not isinstance(y, Tensor):
        raise InvalidTypeError(f"batch targets must be a torch.Tensor; got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise DTypeError(f"batch targets must be class indices (an integer tensor) or real values; got {y.dtype}")
    if loss_fn is F.cross_entropy and y.is_floating_point() and y.ndim < 2:
        raise DTypeError(
            f"cross-entropy targets must be class indices (an integer tensor, e.g. y.long()); got {y.dtype} of "
            f"shape {list(y.shape)} (floating targets are class probabilities, one row per sample)"
        )
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ShapeError(
            f"inputs and targets must have the same batch size (first dimension); got inputs {list(x.shape)}, "
            f"targets {list(y.shape)}"
        )
    return x, y


def record_step_gradients(seeds: Mapping[str, SeedState], metrics: StepMetrics) -> dict[str, SeedState]:
    """Fold one step's gradient telemetry into the seed states (``ef.record_gradients`` per routed seed).

    Returns new states; reads the metrics back to the host once. A step whose
    loss or any gradient norm is not finite records nothing (the states come
    back as they were): the governor judges such an epoch, and an unmeasured
    seed stays unmeasured rather than recording a NaN.
    """
    all_health = metrics.seed_health
    sids = [sid for sid in all_health if sid in seeds]
    health = [all_health[sid] for sid in sids]
    values = torch.stack(
        [metrics.loss.detach().double().cpu(), metrics.host_grad_norm.detach().double().cpu()]
        + [t.detach().double().cpu() for h in health for t in (h.norm, h.health, h.has_exploding, h.has_vanishing)]
    ).tolist()
    if not all(math.isfinite(v) for v in values[:2] + values[2::4]):
        return dict(seeds)
    out = dict(seeds)
    host = values[1]
    for i, sid in enumerate(sids):
        norm, score, exploding, vanishing = values[2 + 4 * i : 6 + 4 * i]
        out[sid] = record_gradients(
            out[sid],
            host_grad_norm=host,
            seed_grad_norm=norm,
            gradient_norm=norm,
            gradient_health=score,
            has_exploding=bool(exploding),
            has_vanishing=bool(vanishing),
        )
    return out


# --------------------------------------------------------------------------- static inputs and the next state


def _static_inputs(
    model: Model, state: TrainState, device: torch.device, optimizer: Optimizer, compiling: bool
) -> tuple[_Layout, list[Tensor], Tensor, tuple[bool, ...], torch.Generator | None, Optimizer]:
    """``(layout, inputs, alphas, trains, rng, optimizer)``.

    Where the tensors live; the differentiated leaves (the host's and the
    routed seeds' parameters, detached, requiring grad); the alpha vector;
    which routed seeds train; dropout's generator (or None); the optimizer
    (with a tensor learning rate when compiling).

    Everything memoised here is built here, eagerly, so the traced numeric
    step only reads it (mutating a memo inside a compiled region would add
    guards on it); and the leaves enter a compiled forward as inputs that
    require grad, so AOTAutograd compiles its backward with it.
    """
    seeds = state.seeds
    values = tuple(float(getattr(seeds[sid], "alpha", 0.0)) if sid in seeds else 0.0 for sid in model.slot_order)
    alphas = _alpha_tensor(model, values, device)
    trains = tuple(sid in seeds and trainable(seeds[sid]) for sid in model.routed)
    rng = None
    if model.host.draws_randomness:
        rng = torch.Generator().manual_seed((state.key * 1_000_003 + state.step) % (2**63))
    layout = _Layout.of(model)
    layout.active(trains)
    inputs = [t.detach().requires_grad_() for t in _read(state.params, layout.host_keys, list(zip(layout.routed, layout.slot_entries, strict=True)))]
    return layout, inputs, alphas, trains, rng, _tensor_lr(model, optimizer) if compiling else optimizer


def _alpha_tensor(model: Model, values: tuple[float, ...], device: torch.device) -> Tensor:
    """The alpha vector as a float32 tensor on ``device``; memoised per model (alphas change once per epoch).

    The memo saves a host-to-device copy per step (a synchronising copy on a
    GPU). Its tensors are never written to, so sharing them is safe.
    """
    memo: dict[tuple[tuple[float, ...], torch.device], Tensor] = model_cache(model).setdefault("alphas", {})
    key = (values, device)
    tensor = memo.get(key)
    if tensor is None:
        if len(memo) >= 8:
            memo.clear()
        tensor = torch.tensor(values, dtype=torch.float32, device=device)
        memo[key] = tensor
    return tensor


def _tensor_lr(model: Model, optimizer: Optimizer) -> Optimizer:
    """``optimizer`` with its learning rate as a 0-d CPU tensor (memoised per model and optimizer value).

    Under ``torch.compile`` a tensor is a graph input, so a new rate does not
    recompile the step; a Python float would be guarded on first.
    """
    lr = getattr(optimizer, "lr", None)
    if lr is None or isinstance(lr, Tensor) or not dataclasses.is_dataclass(optimizer):
        return optimizer
    memo: dict[Optimizer, Optimizer] = model_cache(model).setdefault("tensor_lr", {})
    converted = memo.get(optimizer)
    if converted is None:
        if len(memo) >= 8:
            memo.clear()
        converted = memo[optimizer] = dataclasses.replace(optimizer, lr=torch.tensor(float(lr), dtype=torch.float64))
    return converted


def _advance(state: TrainState, params: Params, buffers: Buffers, opt_state: Any) -> TrainState:
    return dataclasses.replace(state, params=params, buffers=buffers, opt_state=opt_state, step=state.step + 1)


# Under torch.compile these run eagerly, so the graph never guards on lifecycle floats or the step counter.
_static_inputs_eagerly = torch.compiler.disable(_static_inputs)
_advance_eagerly = torch.compiler.disable(_advance)


# --------------------------------------------------------------------------- the numeric step


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where every tensor of the train-mode forward comes from (derived from the model once)."""

    host_keys: tuple[str, ...]  # params["host"] names, in the flat order
    host_flat: tuple[str, ...]  # their names in the model module
    tied: tuple[tuple[str, int], ...]  # (alias name in the model module, index into host_keys)
    buffer_keys: tuple[str, ...]
    buffer_flat: tuple[str, ...]
    routed: tuple[str, ...]
    slot_entries: tuple[tuple[tuple[str, str], ...], ...]  # per routed slot: (group, name)
    slot_flat: tuple[tuple[str, ...], ...]
    memo: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def of(model: Model) -> _Layout:
        cache = model_cache(model)
        layout = cache.get("train_layout")
        if layout is None:
            layout = _Layout.build(model)
            cache["train_layout"] = layout
        return layout

    @staticmethod
    def build(model: Model) -> _Layout:
        host_keys: list[str] = []
        host_flat: list[str] = []
        tied: list[tuple[str, str]] = []
        buffer_keys: list[str] = []
        buffer_flat: list[str] = []
        slots: dict[str, tuple[list[tuple[str, str]], list[str]]] = {sid: ([], []) for sid in model.routed}
        for path, flat_key in model._flat_names:  # type: ignore[attr-defined]
            if path[0] == "params":
                if flat_key == f"host.{path[2]}":
                    host_keys.append(path[2])
                    host_flat.append(flat_key)
                else:
                    tied.append((flat_key, path[2]))
            elif path[0] == "buffers":
                buffer_keys.append(path[2])
                buffer_flat.append(flat_key)
            else:
                entries, flats = slots[path[1]]
                entries.append((path[2], path[3]))
                flats.append(flat_key)
        index = {k: i for i, k in enumerate(host_keys)}
        return _Layout(
            tuple(host_keys), tuple(host_flat), tuple((alias, index[master]) for alias, master in tied),
            tuple(buffer_keys), tuple(buffer_flat), tuple(model.routed),
            tuple(tuple(slots[sid][0]) for sid in model.routed), tuple(tuple(slots[sid][1]) for sid in model.routed),
        )

    def active(self, trains: tuple[bool, ...]) -> tuple[int, ...]:
        """Indices of the leaves the optimizer updates: the host's, then those of the seeds that train."""
        key = ("active", trains)
        active = self.memo.get(key)
        if active is None:
            indices = list(range(len(self.host_keys)))
            offset = len(self.host_keys)
            for entries, trained in zip(self.slot_entries, trains, strict=True):
                if trained:
                    indices += range(offset, offset + len(entries))
                offset += len(entries)
            active = self.memo[key] = tuple(indices)
        return active

    def flat(self, leaves: list[Tensor], buffers: list[Tensor]) -> dict[str, Tensor]:
        """The model module's tensor dict from the differentiated leaves (host, then routed slots) and buffers."""
        n_host = len(self.host_keys)
        flat = dict(zip(self.host_flat, leaves[:n_host], strict=True))
        for alias, i in self.tied:
            flat[alias] = leaves[i]
        offset = n_host
        for names in self.slot_flat:
            flat.update(zip(names, leaves[offset : offset + len(names)], strict=True))
            offset += len(names)
        flat.update(zip(self.buffer_flat, buffers, strict=True))
        return flat


def _numeric_step(
    model: Model,
    layout: _Layout,
    params: Params,
    buffers: Buffers,
    opt_state: Any,
    inputs: list[Tensor],
    alphas: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    trains: tuple[bool, ...],
    rng: torch.Generator | None,
    optimizer: Optimizer,
    loss_fn: LossFn,
    reducer: Reducer,
) -> tuple[Params, Buffers, Any, StepMetrics]:
    """Forward, gradients, telemetry and update: tensors in, tensors out (``trains`` is static structure)."""
    check_tree(model, params, buffers)
    host = params["host"]
    leaves = [host[k] for k in layout.host_keys]
    for sid, entries in zip(layout.routed, layout.slot_entries, strict=True):
        slot = params["slots"][sid]
        leaves += [slot[group][name] for group, name in entries]
    host_buffers = [buffers["host"][k] for k in layout.buffer_keys]

    if rng is not None:  # dropout: the seeded forward of ef.apply (eager only)
        grads, loss, accuracy, new_buffers = _gradients_via_apply(model, params, buffers, alphas, x, y, inputs, layout, rng, loss_fn)
    else:
        grads, loss, accuracy, new_buffers = _gradients(model, layout, inputs, host_buffers, alphas, x, y, loss_fn)

    grads = list(reducer.mean(list(grads)))
    new_host_buffers = _mean_float_buffers(reducer, dict(zip(layout.buffer_keys, new_buffers, strict=True)))
    loss, accuracy = reducer.mean((loss, accuracy))

    n_host = len(layout.host_keys)
    host_grads = grads[:n_host]
    host_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(host_grads))) if host_grads else torch.zeros(())
    seed_grads = grads[n_host:]
    # Per-tensor norms in float64 (esper-lite's gradient collector: no overflow for large gradients).
    norms = torch.stack(torch._foreach_norm(seed_grads, 2, dtype=torch.float64)) if seed_grads else torch.zeros(0, dtype=torch.float64)
    seed_norms = dict(zip(layout.routed, norms.split([len(e) for e in layout.slot_entries]), strict=True))

    new_params, new_opt_state = _optimizer_step(optimizer, opt_state, params, leaves, grads, layout, trains)
    metrics = StepMetrics(loss, accuracy, host_norm, seed_norms)
    return new_params, {"host": new_host_buffers}, new_opt_state, metrics


def _loss_and_accuracy(loss_fn: LossFn, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits, targets = flatten_tokens(out, y)
    return loss_fn(logits, targets), (logits.detach().argmax(dim=-1) == targets).float().mean()


def _gradients(
    model: Model, layout: _Layout, inputs: list[Tensor], host_buffers: list[Tensor], alphas: Tensor, x: Tensor, y: Tensor, loss_fn: LossFn
) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
    """One forward on the leaves that require grad, then ``torch.autograd.grad``.

    Eagerly this is plain autograd (no functorch wrapping). Under
    ``torch.compile`` the forward is a graph whose inputs require grad, so
    AOTAutograd partitions it into a compiled forward and a compiled backward
    (saving what the backward needs rather than recomputing it), and the
    gradient call, run eagerly between two graphs, executes that compiled
    backward: the standard compiled training path, which on CPU is markedly
    faster than one joint ``torch.func.grad`` graph.
    """
    new_buffers = [b.clone() for b in host_buffers]  # BatchNorm writes its running statistics in place
    module = model._runners[1].get()  # type: ignore[attr-defined]
    with torch.enable_grad():
        out = call_module(module, layout.flat(inputs, new_buffers), (x, alphas))
        loss, accuracy = _loss_and_accuracy(loss_fn, out, y)
    value = loss.detach()  # (nothing that requires grad outlives the gradient call)
    grads = _grad_eagerly(loss, inputs) if torch.compiler.is_compiling() else _grad(loss, inputs)
    return grads, value, accuracy, new_buffers


def _grad(loss: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    return list(torch.autograd.grad(loss, inputs, materialize_grads=True)) if inputs else []


_grad_eagerly = torch.compiler.disable(_grad)


def _gradients_via_apply(
    model: Model, params: Params, buffers: Buffers, alphas: Tensor, x: Tensor, y: Tensor,
    inputs: list[Tensor], layout: _Layout, rng: torch.Generator, loss_fn: LossFn,
) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
    """The forward of :func:`esper_func.apply` with its dropout randomness (a generator per step)."""
    n_host = len(layout.host_keys)
    forward_params: Params = {"host": dict(params["host"]), "slots": dict(params["slots"])}
    forward_params["host"].update(zip(layout.host_keys, inputs[:n_host], strict=True))
    offset = n_host
    for sid, entries in zip(layout.routed, layout.slot_entries, strict=True):
        slot = {group: dict(tensors) for group, tensors in params["slots"][sid].items()}
        for (group, name), tensor in zip(entries, inputs[offset : offset + len(entries)], strict=True):
            slot[group][name] = tensor
        forward_params["slots"][sid] = slot
        offset += len(entries)
    with torch.enable_grad():
        out, new_buffers = apply(model, forward_params, buffers, alphas, x, train=True, rng=rng)
        loss, accuracy = _loss_and_accuracy(loss_fn, out, y)
    return _grad(loss, inputs), loss.detach(), accuracy, [new_buffers["host"][k] for k in layout.buffer_keys]


def _optimizer_step(
    optimizer: Optimizer,
    opt_state: Any,
    params: Params,
    leaves: list[Tensor],
    grads: list[Tensor],
    layout: _Layout,
    trains: tuple[bool, ...],
) -> tuple[Params, Any]:
    """Update the host and the seeds that train; every other subtree passes through as it was."""
    names = ("count", *optimizer._slots())
    optimizer._check_state_type(opt_state)
    fields = {name: getattr(opt_state, name) for name in names}
    trained = [(sid, entries) for sid, entries, t in zip(layout.routed, layout.slot_entries, trains, strict=True) if t]
    active = layout.active(trains)
    columns = {name: _read(fields[name], layout.host_keys, trained) for name in names}
    new_leaves, new_columns = optimizer._step_leaves(
        [leaves[i] for i in active], [grads[i] for i in active], columns
    )
    new_params = _write(params, layout.host_keys, trained, new_leaves)
    new_fields = {name: _write(fields[name], layout.host_keys, trained, new_columns[name]) for name in names}
    return new_params, dataclasses.replace(opt_state, **new_fields)


def _read(tree: Params, host_keys: tuple[str, ...], slots: list[tuple[str, tuple[tuple[str, str], ...]]]) -> list[Tensor]:
    """The leaves of ``tree`` (the params layout) for the host and the given slots, in the step's order."""
    host = tree["host"]
    out = [host[k] for k in host_keys]
    for sid, entries in slots:
        slot = tree["slots"][sid]
        out += [slot[group][name] for group, name in entries]
    return out


def _write(
    tree: Params, host_keys: tuple[str, ...], slots: list[tuple[str, tuple[tuple[str, str], ...]]], values: list[Tensor]
) -> Params:
    """``tree`` with those leaves replaced by ``values``; every other subtree is shared, key order kept."""
    n_host = len(host_keys)
    host = dict(zip(host_keys, values[:n_host], strict=True))
    if tuple(tree["host"]) != host_keys:
        host = {k: host[k] for k in tree["host"]}
    if not slots:
        return {**tree, "host": host}
    new_slots = dict(tree["slots"])
    offset = n_host
    for sid, entries in slots:
        by_name = dict(zip(entries, values[offset : offset + len(entries)], strict=True))
        offset += len(entries)
        new_slots[sid] = {
            group: {name: by_name.get((group, name), v) for name, v in tensors.items()}
            for group, tensors in tree["slots"][sid].items()
        }
    return {**tree, "host": host, "slots": new_slots}


def _mean_float_buffers(reducer: Reducer, host: dict[str, Tensor]) -> dict[str, Tensor]:
    """Average the floating-point buffers (running statistics) across ranks; counters stay."""
    if isinstance(reducer, LocalReducer):
        return host
    floats = {k: v for k, v in host.items() if v.is_floating_point()}
    averaged = reducer.mean(floats)
    return {k: averaged.get(k, v) for k, v in host.items()}
