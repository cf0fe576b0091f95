"""Recording measurements into a :class:`~esper_func.lifecycle.state.SeedState`.

``record_accuracy``, ``record_contribution`` and ``record_gradients`` return
new states (esper-lite's ``SeedMetrics.record_accuracy``, its counterfactual
bookkeeping and ``SeedSlot.capture_gradient_telemetry``). A free slot
(DORMANT) has nothing to measure: the state is returned as is.
``record_accuracy`` counts an epoch in every other stage, as esper-lite's
``SeedMetrics.record_accuracy`` does (the training loop decides which slots it
records: esper-lite's heuristic loop records live seeds only);
``record_gradients`` needs a live seed.

``gradient_norms`` and ``global_norm`` compute L2 norms of gradient pytrees
as 0-d tensors (no host sync); ``record_gradients`` accepts those tensors or
Python floats and converts them with ``float()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import torch
from torch import Tensor

from esper_func._pytree import tree_leaves
from esper_func._validate import check_float, check_optional_bool
from esper_func.errors import InvalidArgumentError, InvalidTypeError
from esper_func.lifecycle.gates import DEFAULT_GRADIENT_EMA_DECAY
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import SeedState, has_seed

__all__ = [
    "GRADIENT_EPSILON",
    "MAX_GRADIENT_RATIO",
    "CONTRIBUTION_VELOCITY_DECAY",
    "record_accuracy",
    "record_contribution",
    "record_gradients",
    "gradient_ratio",
    "gradient_norms",
    "global_norm",
    "GradientHealth",
    "gradient_health",
    "VANISHING_THRESHOLD",
    "EXPLODING_THRESHOLD",
]

#: Host gradient norms below this make the seed/host ratio meaningless (ratio 0).
GRADIENT_EPSILON: Final[float] = 1e-8
#: Upper bound of the normalised seed/host gradient ratio.
MAX_GRADIENT_RATIO: Final[float] = 10.0
#: EMA decay of ``metrics.contribution_velocity`` (esper-lite's counterfactual engine).
CONTRIBUTION_VELOCITY_DECAY: Final[float] = 0.7
#: Weight of the newest change in that EMA (written out, not ``1 - 0.7``, to round as esper-lite does).
_CONTRIBUTION_VELOCITY_NEW: Final[float] = 0.3

#: A per-tensor gradient norm below this counts as vanishing (esper-lite's gradient collector).
VANISHING_THRESHOLD: Final[float] = 1e-7
#: A per-tensor gradient norm above this (or non-finite) counts as exploding: 10x esper-lite's
#: training clip norm of 1.0.
EXPLODING_THRESHOLD: Final[float] = 10.0

Number = float | int | Tensor


def _scalar(name: str, value: Number, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite Python float from a real number or a one-element tensor."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(
                f"{name} must be a number or a one-element tensor; got shape {tuple(value.shape)}"
            )
        value = value.detach().item()
    return check_float(name, value, minimum=minimum, maximum=maximum)


def _flag(name: str, value: bool | Tensor | None) -> bool | None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(f"{name} must be a bool or a one-element tensor; got shape {tuple(value.shape)}")
        value = bool(value.item())
    return check_optional_bool(name, value)


def record_accuracy(state: SeedState, accuracy: Number) -> SeedState:
    """Record one validation accuracy (percent) and count one epoch.

    esper-lite's ``SeedMetrics.record_accuracy``: the first call
    (``epochs_total == 0``) also sets the initial and stage-start
    accuracies; every call updates current and best accuracy and increments
    ``epochs_total`` and ``epochs_in_current_stage``, in every stage,
    including the cooldown after a prune (so recording there shortens the
    embargo, as in esper-lite; the training loop decides which slots it
    records). A free (DORMANT) slot has no metrics: returned as is.
    """
    acc = _scalar("accuracy", accuracy)
    if state.stage == SeedStage.DORMANT:
        return state
    m = state.metrics
    first = m.epochs_total == 0
    metrics = dataclasses.replace(
        m,
        initial_val_accuracy=acc if first else m.initial_val_accuracy,
        accuracy_at_stage_start=acc if first else m.accuracy_at_stage_start,
        current_val_accuracy=acc,
        best_val_accuracy=max(m.best_val_accuracy, acc),
        epochs_total=m.epochs_total + 1,
        epochs_in_current_stage=m.epochs_in_current_stage + 1,
    )
    return dataclasses.replace(state, metrics=metrics)


def record_contribution(state: SeedState, contribution: Number) -> SeedState:
    """Record the seed's counterfactual contribution (accuracy with it minus without it).

    Sets ``metrics.counterfactual_contribution`` (used by gate G5) and updates
    ``contribution_velocity``, an EMA (decay 0.7) of the change since the
    previous measurement. A free (DORMANT) slot has no metrics: returned as is.
    """
    value = _scalar("contribution", contribution)
    if state.stage == SeedStage.DORMANT:
        return state
    m = state.metrics
    velocity = m.contribution_velocity
    if m.prev_contribution is not None:
        delta = value - m.prev_contribution
        velocity = CONTRIBUTION_VELOCITY_DECAY * velocity + _CONTRIBUTION_VELOCITY_NEW * delta
    metrics = dataclasses.replace(
        m, counterfactual_contribution=value, prev_contribution=value, contribution_velocity=velocity
    )
    return dataclasses.replace(state, metrics=metrics)


def gradient_ratio(host_grad_norm: float, seed_grad_norm: float, *, host_params: int, seed_params: int) -> float:
    """Parameter-normalised seed/host gradient ratio, capped at 10.

    ``(seed / host) * sqrt(host_params / seed_params)`` (the square-root
    factor only when both counts are known, i.e. positive); 0 when the host
    norm is below ``1e-8``.
    """
    raw = 0.0 if host_grad_norm < GRADIENT_EPSILON else seed_grad_norm / host_grad_norm
    if host_params > 0 and seed_params > 0:
        raw = raw * (host_params / seed_params) ** 0.5
    return min(MAX_GRADIENT_RATIO, raw)


def record_gradients(
    state: SeedState,
    *,
    host_grad_norm: Number,
    seed_grad_norm: Number,
    gradient_health: Number | None = None,
    has_exploding: bool | Tensor | None = None,
    has_vanishing: bool | Tensor | None = None,
    gradient_norm: Number | None = None,
) -> SeedState:
    """Record one gradient measurement (call after backward, at any stride).

    As esper-lite's ``SeedSlot.capture_gradient_telemetry``: sets
    ``metrics.seed_gradient_norm_ratio`` to :func:`gradient_ratio` of the two
    norms (strict gate G2 needs it) and updates ``metrics.gradient_norm_avg``
    as an EMA (decay 0.9) of the seed norm. ``gradient_health`` (0-1),
    ``has_exploding``, ``has_vanishing`` and ``gradient_norm`` replace the
    stored telemetry when given (permissive G2 reads them; see
    :func:`~esper_func.lifecycle.sync_telemetry`, which also stamps the
    epoch); ``None`` leaves them as they were. Without a live seed the state
    is returned as is.

    Raises:
        InvalidArgumentError: a non-finite or negative norm (the training loop
            hands a non-finite epoch to the governor instead of recording it),
            a health outside ``[0, 1]``.
    """
    host = _scalar("host_grad_norm", host_grad_norm, minimum=0.0)
    seed = _scalar("seed_grad_norm", seed_grad_norm, minimum=0.0)
    health = None if gradient_health is None else _scalar("gradient_health", gradient_health, minimum=0.0, maximum=1.0)
    norm = None if gradient_norm is None else _scalar("gradient_norm", gradient_norm, minimum=0.0)
    exploding = _flag("has_exploding", has_exploding)
    vanishing = _flag("has_vanishing", has_vanishing)
    if not has_seed(state):
        return state
    m = state.metrics
    ratio = gradient_ratio(host, seed, host_params=m.host_param_count, seed_params=m.seed_param_count)
    avg = DEFAULT_GRADIENT_EMA_DECAY * m.gradient_norm_avg + (1 - DEFAULT_GRADIENT_EMA_DECAY) * seed
    t = state.telemetry
    telemetry = dataclasses.replace(
        t,
        gradient_norm=t.gradient_norm if norm is None else norm,
        gradient_health=t.gradient_health if health is None else health,
        has_exploding=t.has_exploding if exploding is None else exploding,
        has_vanishing=t.has_vanishing if vanishing is None else vanishing,
    )
    return dataclasses.replace(
        state,
        metrics=dataclasses.replace(m, seed_gradient_norm_ratio=ratio, gradient_norm_avg=avg),
        telemetry=telemetry,
    )


def global_norm(tree: Any) -> Tensor:
    """L2 norm over every tensor leaf of ``tree`` as a 0-d tensor (``None`` leaves skipped).

    Every leaf is reduced in float64 (as esper-lite's gradient collectors do),
    so gradients of 1e20 give a finite norm instead of an overflowed float32
    square; the result is a float64 tensor on the first leaf's device. An
    empty tree gives ``tensor(0., dtype=float64)``. Nothing is synced to the
    host, so this is cheap to call every step.
    """
    leaves = tree_leaves(tree)
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise InvalidTypeError(f"gradient trees may hold tensors and None only; found {type(leaf).__name__}")
    if not leaves:
        return torch.zeros((), dtype=torch.float64)
    device = leaves[0].device
    norms = [torch.linalg.vector_norm(leaf.detach(), dtype=torch.float64).to(device) for leaf in leaves]
    return torch.linalg.vector_norm(torch.stack(norms))


def gradient_norms(grads: Mapping[str, Any]) -> dict[str, Tensor]:
    """Global L2 norm of each named gradient subtree, e.g. ``{"host": ..., "seed": ...}``.

    Returns a dict with the same keys and 0-d tensors (see
    :func:`global_norm`); pass them straight to :func:`record_gradients`,
    which converts with ``float()``.
    """
    if not isinstance(grads, Mapping):
        raise InvalidTypeError(
            "gradient_norms() takes a mapping of named gradient trees, e.g. "
            f"{{'host': host_grads, 'seed': seed_grads}}; got {type(grads).__name__}"
        )
    return {name: global_norm(tree) for name, tree in grads.items()}


class GradientHealth(NamedTuple):
    """Gradient health of one seed, as 0-d tensors (nothing synced to the host).

    ``norm`` is the global L2 norm (float64); ``health`` is in ``[0, 1]``;
    ``has_vanishing`` and ``has_exploding`` are booleans. Convert with
    ``float()``/``bool()`` when the loop records them
    (:func:`record_gradients`).
    """

    norm: Tensor
    health: Tensor
    has_vanishing: Tensor
    has_exploding: Tensor


def gradient_health(
    tree: Any,
    *,
    vanishing_threshold: float = VANISHING_THRESHOLD,
    exploding_threshold: float = EXPLODING_THRESHOLD,
) -> GradientHealth:
    """esper-lite's gradient health of the gradient tensors in ``tree`` (pure, sync-free).

    Per tensor, the L2 norm in float64 (so squares of large values do not
    overflow). With ``n`` tensors, ``v`` of them below ``vanishing_threshold``
    and ``e`` above ``exploding_threshold`` or not finite::

        health = clamp(1 - 0.5 * v / n - 0.8 * e / n, 0, 1)   if the global norm is finite
                 0                                           otherwise

    ``has_vanishing = v > 0``, ``has_exploding = e > 0``. An empty tree is
    healthy: norm 0, health 1, no flags (esper-lite's convention for a seed
    without gradients). Reproduces ``collect_seed_gradients`` of esper-lite's
    ``simic/telemetry/gradient_collector.py``.
    """
    leaves = [leaf for leaf in tree_leaves(tree) if leaf is not None]
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise InvalidTypeError(f"gradient trees may hold tensors and None only; found {type(leaf).__name__}")
    if not leaves:
        zero = torch.zeros((), dtype=torch.float64)
        false = torch.zeros((), dtype=torch.bool)
        return GradientHealth(zero, torch.ones((), dtype=torch.float64), false, false)
    device = leaves[0].device
    norms = torch.stack([torch.linalg.vector_norm(leaf.detach().double()).to(device) for leaf in leaves])
    total = norms.square().sum().sqrt()
    n_vanishing = (norms < vanishing_threshold).sum()
    n_exploding = ((norms > exploding_threshold) | ~torch.isfinite(norms)).sum()
    n = float(len(leaves))
    health = (1.0 - (n_vanishing.double() / n) * 0.5 - (n_exploding.double() / n) * 0.8).clamp(0.0, 1.0)
    health = torch.where(torch.isfinite(total), health, torch.zeros_like(health))
    return GradientHealth(total, health, n_vanishing > 0, n_exploding > 0)
