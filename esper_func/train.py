"""A pure training step over the functional model.

:class:`TrainState` is a pytree of everything that changes while training:
parameters, buffers, optimizer state, the lifecycle state of every slot,
the step counter and an RNG key. :func:`train_step` maps one state to the
next with ``torch.func.grad_and_value`` of a functional loss, and never
mutates its inputs; keeping the old state *is* the rollback.

Per-slot update masks come from the lifecycle: a seed whose controller is
ramping alpha down (``ef.trainable(state)`` is false), a seed that is not in
the forward pass (GERMINATED) and an empty slot get no update, not even
weight decay. Gradient norms of the host and of every seed feed
``ef.record_gradients`` each step, which is what gate G2 reads.

Data parallelism plugs in through a :class:`Reducer`: gradients (and the
BatchNorm running statistics) are averaged across ranks before anything
reads them, so every rank computes the same update from the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.func import grad_and_value

from esper_func._pytree import pytree_dataclass, static_field
from esper_func.counterfactual import flatten_tokens
from esper_func.lifecycle import SeedState, gradient_health, gradient_norms, record_gradients, trainable
from esper_func.model import Buffers, Model, Params, alphas_of, apply
from esper_func.optim import Optimizer

__all__ = [
    "LocalReducer",
    "LossFn",
    "Reducer",
    "StepMetrics",
    "TrainState",
    "init_train_state",
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


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """What one step measured (already reduced across ranks).

    ``seed_grad_norms`` holds the seeds in the forward pass (``model.routed``).
    """

    loss: float
    accuracy: float
    host_grad_norm: float
    seed_grad_norms: Mapping[str, float]


def init_train_state(
    model: Model,
    params: Params,
    buffers: Buffers,
    *,
    optimizer: Optimizer,
    seeds: Mapping[str, SeedState] | None = None,
    key: int = 0,
) -> TrainState:
    """A fresh :class:`TrainState` (optimizer state from ``optimizer.init``)."""
    del model  # part of the signature so callers keep model and state together
    return TrainState(params, buffers, optimizer.init(params), dict(seeds or {}), 0, int(key))


def update_mask(model: Model, seeds: Mapping[str, SeedState]) -> dict[str, Any]:
    """The optimizer mask: the host trains; a seed trains when it runs and is not blending out."""
    routed = model.routed
    slots = {}
    for slot_id in model.seeded:
        state = seeds.get(slot_id)
        slots[slot_id] = slot_id in routed and state is not None and trainable(state)
    return {"host": True, "slots": slots}


def _step_generator(key: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((key * 1_000_003 + step) % (2**63))


def _accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    return (logits.argmax(dim=-1) == targets).float().mean()


def _loss_and_accuracy(loss_fn: LossFn, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits, targets = flatten_tokens(out, y)
    return loss_fn(logits, targets), _accuracy(logits.detach(), targets)


def train_step(
    model: Model,
    state: TrainState,
    batch: tuple[Tensor, Tensor],
    *,
    optimizer: Optimizer,
    loss_fn: LossFn,
    reducer: Reducer | None = None,
) -> tuple[TrainState, StepMetrics]:
    """One optimizer step; pure.

    The forward runs in training mode with the alphas of ``state.seeds``;
    gradients (and BatchNorm statistics) are averaged by ``reducer`` before
    the update and before the gradient norms are recorded, so with a
    distributed reducer every rank ends the step with identical values.
    """
    reducer = reducer or LocalReducer()
    x, y = batch
    alphas = alphas_of(model, state.seeds, device=x.device)
    generator = _step_generator(state.key, state.step)

    def objective(params: Params) -> tuple[Tensor, tuple[Buffers, Tensor]]:
        out, new_buffers = apply(model, params, state.buffers, alphas, x, train=True, rng=generator)
        loss, accuracy = _loss_and_accuracy(loss_fn, out, y)
        return loss, (new_buffers, accuracy)

    grads, (loss, (new_buffers, accuracy)) = grad_and_value(objective, has_aux=True)(state.params)
    grads = reducer.mean(grads)
    new_buffers = _mean_float_buffers(reducer, new_buffers)
    loss, accuracy = reducer.mean((loss.detach(), accuracy))

    routed = model.routed
    norms = gradient_norms({"host": grads["host"], **{sid: grads["slots"][sid] for sid in routed}})
    seeds = dict(state.seeds)
    for slot_id in routed:
        if slot_id in seeds and bool(torch.isfinite(norms["host"]) & torch.isfinite(norms[slot_id])):
            health = gradient_health(grads["slots"][slot_id])
            seeds[slot_id] = record_gradients(
                seeds[slot_id],
                host_grad_norm=norms["host"],
                seed_grad_norm=norms[slot_id],
                gradient_norm=health.norm,
                gradient_health=health.health,
                has_vanishing=health.has_vanishing,
                has_exploding=health.has_exploding,
            )

    params, opt_state = optimizer.update(
        grads, state.opt_state, state.params, mask=update_mask(model, state.seeds)
    )
    new_state = dataclasses.replace(
        state, params=params, buffers=new_buffers, opt_state=opt_state, seeds=seeds, step=state.step + 1
    )
    metrics = StepMetrics(
        loss=float(loss),
        accuracy=float(accuracy),
        host_grad_norm=float(norms["host"]),
        seed_grad_norms={sid: float(norms[sid]) for sid in routed},
    )
    return new_state, metrics


def _mean_float_buffers(reducer: Reducer, buffers: Buffers) -> Buffers:
    """Average the floating-point buffers (running statistics) across ranks; counters stay."""
    host = buffers["host"]
    floats = {k: v for k, v in host.items() if v.is_floating_point()}
    averaged = reducer.mean(floats)
    return {"host": {k: averaged.get(k, v) for k, v in host.items()}}
