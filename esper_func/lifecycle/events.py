"""Lifecycle events as values.

Every lifecycle function returns the events it caused, in order, as a tuple
of the frozen records below; there are no callbacks and no telemetry hub.
The records carry what a dashboard needs (the fields of esper-lite's
``Seed*Payload`` telemetry payloads, minus wall-clock timestamps and the
environment id). ``epoch`` is the seed's ``metrics.epochs_total`` when the
event happened.

Stage fields are :class:`~esper_func.lifecycle.stages.SeedStage` members and curves are
:class:`~esper_func.lifecycle.alpha.AlphaCurve` members; use ``.name`` for display.
"""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from esper_func.lifecycle.alpha import AlphaCurve
from esper_func.lifecycle.gates import GateLevel
from esper_func.lifecycle.stages import SeedStage

__all__ = [
    "SeedGerminated",
    "GateEvaluated",
    "StageChanged",
    "SeedFossilized",
    "SeedPruned",
    "TournamentDecided",
    "LifecycleEvent",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedGerminated:
    """A seed was created in a slot (stage GERMINATED)."""

    slot_id: str
    seed_id: str
    blueprint_id: str
    epoch: int
    params: int
    alpha: float
    blend_algorithm_id: str
    blend_tempo_epochs: int
    alpha_curve: AlphaCurve
    topology: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateEvaluated:
    """A quality gate was checked for a requested transition.

    ``passed`` is the gate's verdict; the transition may still not happen
    (see the :class:`~esper_func.lifecycle.gates.GateResult` returned by ``advance``).
    """

    slot_id: str
    seed_id: str
    epoch: int
    gate: GateLevel
    target_stage: SeedStage
    passed: bool
    score: float
    checks_passed: tuple[str, ...]
    checks_failed: tuple[str, ...]
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageChanged:
    """The slot moved from ``from_stage`` to ``to_stage``.

    ``accuracy_delta`` is the seed's total improvement (0 for cooldown
    transitions), ``epochs_in_stage`` the epochs spent in ``from_stage``,
    ``alpha`` the blend weight right after the change (for a prune: right
    before alpha dropped to 0). ``grad_ratio``, ``has_vanishing`` and
    ``has_exploding`` report the gradient telemetry once it has been synced
    (``telemetry.epoch > 0``) and are ``0.0``/``False`` before, as in
    esper-lite.
    """

    slot_id: str
    seed_id: str
    blueprint_id: str
    epoch: int
    from_stage: SeedStage
    to_stage: SeedStage
    alpha: float
    accuracy_delta: float
    epochs_in_stage: int
    alpha_curve: AlphaCurve
    grad_ratio: float
    has_vanishing: bool
    has_exploding: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedFossilized:
    """The seed became a permanent part of the host."""

    slot_id: str
    seed_id: str
    blueprint_id: str
    epoch: int
    improvement: float
    counterfactual: float | None
    params_added: int
    alpha: float
    epochs_total: int
    blending_delta: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedPruned:
    """The seed was removed; the slot enters its cooldown (PRUNED -> EMBARGOED -> RESETTING)."""

    slot_id: str
    seed_id: str
    blueprint_id: str
    epoch: int
    reason: str
    initiator: str
    auto_pruned: bool
    improvement: float
    counterfactual: float | None
    epochs_total: int
    blending_delta: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class TournamentDecided:
    """A slot's candidate seeds were scored and one was kept (``esper_func.tournament.select_candidate``).

    Per candidate, in candidate order: its blueprint, its validation loss and
    accuracy blended in at ``alpha``, its ``contribution`` (accuracy blended
    in minus the host's without it, in percentage points, as esper-lite's
    counterfactual contribution), whether it passes gate G2 and the G2
    checks it fails (comma-separated, ``""`` when it passes).
    ``winner`` indexes the kept candidate; ``reason`` says why it won.
    """

    slot_id: str
    seed_id: str
    blueprint_id: str
    epoch: int
    alpha: float
    baseline_loss: float
    baseline_accuracy: float
    candidates: tuple[str, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    contributions: tuple[float, ...]
    gate_passed: tuple[bool, ...]
    gate_checks_failed: tuple[str, ...]
    winner: int
    reason: str


LifecycleEvent: TypeAlias = SeedGerminated | GateEvaluated | StageChanged | SeedFossilized | SeedPruned | TournamentDecided
"""Any lifecycle event: the union of the lifecycle event records."""
